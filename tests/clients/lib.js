// Shared by the client tests: the server under test (IMAGING_URL, IMAGING_TOKEN, set by
// tests/e2e/test_clients.py), plain HTTP calls to prepare data, and waiting on the server's
// subscriber count so a test writes only once its subscription is registered.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import { createClient } from "graphql-ws";

export const BASE = process.env.IMAGING_URL;
export const HTTP_URL = `${BASE}/graphql`;
export const WS_URL = HTTP_URL.replace(/^http/, "ws");
export const TOKEN = process.env.IMAGING_TOKEN;
export const AUTH = `Bearer ${TOKEN}`;
assert.ok(BASE && TOKEN, "run by tests/e2e/test_clients.py, which sets IMAGING_URL and IMAGING_TOKEN");

export const CREATE = `mutation($res: ImagingStudyInput!) {
  ImagingStudyCreate(res: $res) { id meta { versionId } } }`;
export const SET_STATUS = `mutation($id: ID!, $status: String!) {
  ImagingStudySetStatus(id: $id, status: $status) { id status meta { versionId } } }`;
export const DELETE = `mutation($id: ID!) { ImagingStudyDelete(id: $id) { id deleted } }`;

/** A fresh study id, so that tests never meet each other's data. */
export function newId(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** One GraphQL call over HTTP with the test token; returns data, failing on errors. */
export async function post(query, variables = {}) {
  const response = await fetch(HTTP_URL, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: AUTH },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

/** A study of `series` (each [uid, instance count, element id or undefined]). */
export function study(id, series, extra = {}) {
  return {
    id,
    status: "available",
    subject: { reference: "Patient/clients" },
    series: series.map(([uid, count, elementId], s) => ({
      ...(elementId ? { id: elementId } : {}),
      uid,
      number: s + 1,
      description: `series ${uid}`,
      modality: { coding: [{ system: "http://dicom.nema.org/resources/ontology/DCM", code: "CT" }] },
      instance: Array.from({ length: count }, (_, n) => ({
        ...(elementId ? { id: `i${n + 1}` } : {}),
        uid: `${uid}.${n + 1}`,
        number: n + 1,
        sopClass: { system: "urn:ietf:rfc:3986", code: "urn:oid:1.2.840.10008.5.1.4.1.1.2" },
      })),
    })),
    ...extra,
  };
}

export async function createStudy(resource) {
  return (await post(CREATE, { res: resource })).ImagingStudyCreate;
}

/** The server's count of open subscriptions (its /metrics gauge). */
export async function subscribers() {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("imaging_subscriptions "));
  return Number(line.split(" ")[1]);
}

/** Resolves once the server counts `count` open subscriptions. */
export async function untilSubscribers(count) {
  for (let i = 0; i < 300; i += 1) {
    if ((await subscribers()) === count) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`the server never counted ${count} subscriptions (now ${await subscribers()})`);
}

/** A graphql-ws client over `ws` with the test token in connection_init. */
export function wsClient(options = {}) {
  return createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: AUTH },
    retryAttempts: 0,
    ...options,
  });
}

/** A queue of what a sink receives, to await events one by one. */
export function inbox() {
  const items = [];
  const waiting = [];
  const push = (item) => (waiting.length ? waiting.shift()(item) : items.push(item));
  return {
    sink: {
      next: (value) => push({ next: value }),
      error: (error) => push({ error }),
      complete: () => push({ complete: true }),
    },
    take(ms = 5000) {
      if (items.length) return Promise.resolve(items.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`nothing received in ${ms} ms`)), ms);
        waiting.push((item) => { clearTimeout(timer); resolve(item); });
      });
    },
    get pending() { return items.length; },
  };
}

/** The README's viewer query (its `query Viewer` block) and the variables given after it:
 * the clients run what the README shows, so the two cannot drift apart. */
export function readmeViewer() {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const found = readme.match(/```graphql\n(query Viewer[^`]*)```\s*```json\n([^`]*)```/);
  assert.ok(found, "README.md has no `query Viewer` block followed by its variables");
  return { query: found[1], variables: JSON.parse(found[2]) };
}
