// Apollo's automatic persisted queries, with Apollo's own PersistedQueryLink in front of an
// HttpLink: a hash the server has not seen is answered PERSISTED_QUERY_NOT_FOUND, the link sends
// the query with its hash, and from then on the hash alone (by GET with useGETForHashedQueries).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { AUTH, HTTP_URL, SET_STATUS, createStudy, newId, study } from "./lib.js";

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

/** A client whose every HTTP request is recorded as [method, sent the query text?]. */
function recorded(options = {}) {
  const requests = [];
  const fetchAndRecord = async (url, init) => {
    const body = init.body ? JSON.parse(init.body) : {};
    const query = init.method === "GET" ? new URL(url).searchParams.get("query") : body.query;
    requests.push([init.method, Boolean(query)]);
    return fetch(url, init);
  };
  const link = new PersistedQueryLink({ sha256, ...options }).concat(
    new HttpLink({ uri: HTTP_URL, headers: { authorization: AUTH }, fetch: fetchAndRecord }));
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return { client, requests };
}

// A query text no other test sends, so the server cannot know its hash yet.
function freshQuery(tag) {
  return gql`query Persisted${tag} { ImagingStudy(id: "example-xr") { id status } }`;
}

test("a new hash is registered once, then sent alone by GET", async () => {
  const { client, requests } = recorded({ useGETForHashedQueries: true });
  const query = freshQuery(newId("g").replace("-", "_"));
  try {
    const first = await client.query({ query, fetchPolicy: "network-only" });
    assert.deepEqual(first.data.ImagingStudy, { __typename: "ImagingStudy", id: "example-xr", status: "available" });
    // GET with the hash only (not found), then POST with the query (registered).
    assert.deepEqual(requests, [["GET", false], ["POST", true]]);

    const second = await client.query({ query, fetchPolicy: "network-only" });
    assert.deepEqual(second.data, first.data);
    assert.deepEqual(requests.slice(2), [["GET", false]]);
  } finally {
    client.stop();
  }
});

test("a hashed mutation goes by POST and is answered", async () => {
  const { client, requests } = recorded({ useGETForHashedQueries: true });
  const id = newId("apq-mutation");
  await createStudy(study(id, [["1.2.6.1", 1]]));
  try {
    const { data } = await client.mutate({ mutation: gql(SET_STATUS), variables: { id, status: "cancelled" } });
    assert.equal(data.ImagingStudySetStatus.status, "cancelled");
    assert.ok(requests.every(([method]) => method === "POST"), JSON.stringify(requests));
  } finally {
    client.stop();
  }
});

test("by POST too: the hash alone once the server knows it", async () => {
  const { client, requests } = recorded();
  const query = freshQuery(newId("p").replace("-", "_"));
  try {
    await client.query({ query, fetchPolicy: "network-only" });
    await client.query({ query, fetchPolicy: "network-only" });
    assert.deepEqual(requests, [["POST", false], ["POST", true], ["POST", false]]);
  } finally {
    client.stop();
  }
});
