// graphql-ws, the reference client of the graphql-transport-ws protocol, against /graphql.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DELETE, SET_STATUS, createStudy, inbox, newId, post, study, subscribers, untilSubscribers,
  wsClient,
} from "./lib.js";

const CHANGED = `subscription($id: ID) { ImagingStudyChanged(id: $id) {
  action id versionId status resource { id status } } }`;

function changed(message) {
  assert.ok(message.next, `expected an event, got ${JSON.stringify(message)}`);
  assert.equal(message.next.errors, undefined);
  return message.next.data.ImagingStudyChanged;
}

test("a subscription receives create, update and delete in order", async () => {
  const client = wsClient();
  const id = newId("ws-order");
  const before = await subscribers();
  const events = inbox();
  const stop = client.subscribe({ query: CHANGED, variables: { id } }, events.sink);
  try {
    await untilSubscribers(before + 1);
    await createStudy(study(id, [["1.2.3.1", 1]]));
    await post(SET_STATUS, { id, status: "cancelled" });
    await post(DELETE, { id });
    const got = [changed(await events.take()), changed(await events.take()),
      changed(await events.take())];
    assert.deepEqual(got.map((e) => [e.action, e.id, e.versionId]),
      [["create", id, "1"], ["update", id, "2"], ["delete", id, "3"]]);
    assert.deepEqual(got[1].resource, { id, status: "cancelled" });
    assert.equal(got[2].resource, null);
  } finally {
    stop();
    await client.dispose();
    await untilSubscribers(before); // the next test counts from here
  }
});

test("two subscriptions share one socket; completing one leaves the other", async () => {
  let sockets = 0;
  const client = wsClient({ on: { connected: () => { sockets += 1; } } });
  const [a, b] = [newId("ws-a"), newId("ws-b")];
  const before = await subscribers();
  const [eventsA, eventsB] = [inbox(), inbox()];
  const stopA = client.subscribe({ query: CHANGED, variables: { id: a } }, eventsA.sink);
  const stopB = client.subscribe({ query: CHANGED, variables: { id: b } }, eventsB.sink);
  try {
    await untilSubscribers(before + 2);
    await createStudy(study(a, [["1.2.3.2", 1]]));
    await createStudy(study(b, [["1.2.3.3", 1]]));
    assert.equal(changed(await eventsA.take()).id, a);
    assert.equal(changed(await eventsB.take()).id, b);
    assert.equal(sockets, 1);

    stopA(); // sends `complete`: the server ends that subscription only
    await untilSubscribers(before + 1);
    await post(SET_STATUS, { id: a, status: "cancelled" });
    await post(SET_STATUS, { id: b, status: "cancelled" });
    assert.equal(changed(await eventsB.take()).status, "cancelled");
    // A's sink heard only its own completion, no event after it.
    assert.deepEqual(await eventsA.take(), { complete: true });
    assert.equal(eventsA.pending, 0);
  } finally {
    stopB();
    await client.dispose();
    await untilSubscribers(before);
  }
});

test("a query over the socket gets its result, then the server's complete", async () => {
  const client = wsClient();
  const results = inbox();
  try {
    client.subscribe({ query: `{ ImagingStudy(id: "example-xr") { id status } }` }, results.sink);
    assert.deepEqual((await results.take()).next.data,
      { ImagingStudy: { id: "example-xr", status: "available" } });
    assert.deepEqual(await results.take(), { complete: true });
  } finally {
    await client.dispose();
  }
});

test("a ping is answered with a pong", async () => {
  const pongs = inbox();
  const client = wsClient({
    lazy: false,
    keepAlive: 50, // the client pings every 50 ms once connected
    on: { pong: (received, payload) => pongs.sink.next({ received, payload }) },
  });
  try {
    assert.deepEqual((await pongs.take()).next, { received: true, payload: undefined });
  } finally {
    await client.dispose();
  }
});

test("a bad token is refused with close code 4403", async () => {
  const client = wsClient({ connectionParams: { Authorization: "Bearer not-a-token" } });
  const results = inbox();
  try {
    client.subscribe({ query: CHANGED, variables: { id: "any" } }, results.sink);
    const { error } = await results.take();
    assert.ok(error, "expected the socket to close with an error");
    assert.equal(error.code, 4403);
  } finally {
    await client.dispose();
  }
});

test("after the socket drops, the client reconnects and receives later events", async () => {
  let sockets = 0;
  const client = wsClient({
    retryAttempts: 3,
    retryWait: () => new Promise((resolve) => setTimeout(resolve, 50)),
    shouldRetry: () => true,
    on: { connected: () => { sockets += 1; } },
  });
  const id = newId("ws-again");
  const before = await subscribers();
  const events = inbox();
  const stop = client.subscribe({ query: CHANGED, variables: { id } }, events.sink);
  try {
    await untilSubscribers(before + 1);
    await createStudy(study(id, [["1.2.3.4", 1]]));
    assert.equal(changed(await events.take()).action, "create");

    client.terminate(); // the socket is gone; the client opens a new one and resubscribes
    await untilSubscribers(before); // the server saw the old socket go
    await untilSubscribers(before + 1);
    await post(SET_STATUS, { id, status: "cancelled" });
    const event = changed(await events.take());
    assert.deepEqual([event.action, event.versionId], ["update", "2"]);
    assert.equal(sockets, 2);
  } finally {
    stop();
    await client.dispose();
    await untilSubscribers(before); // the next test counts from here
  }
});

const RESUMABLE = `subscription($id: ID, $patient: String, $status: String, $after: String) {
  ImagingStudyChanged(id: $id, patient: $patient, status: $status, after: $after) {
    action id versionId status subject position } }`;

test("a delete reaches a subscription filtered by patient and status, with what the study had", async () => {
  const client = wsClient();
  const id = newId("ws-delete");
  const patient = newId("pat");
  await createStudy(study(id, [["1.2.3.5", 1]], { subject: { reference: `Patient/${patient}` } }));
  const before = await subscribers();
  const [byPatient, byStatus] = [inbox(), inbox()];
  const stops = [
    client.subscribe({ query: RESUMABLE, variables: { patient } }, byPatient.sink),
    client.subscribe({ query: RESUMABLE, variables: { id, status: "available" } }, byStatus.sink),
  ];
  try {
    await untilSubscribers(before + 2);
    await post(DELETE, { id });
    for (const events of [byPatient, byStatus]) {
      const event = changed(await events.take());
      assert.deepEqual([event.action, event.id, event.status, event.subject],
        ["delete", id, "available", `Patient/${patient}`]);
    }
  } finally {
    stops.forEach((stop) => stop());
    await client.dispose();
    await untilSubscribers(before);
  }
});

test("after a reconnect, `after` replays exactly what was missed, then goes on live", async () => {
  const id = newId("ws-resume");
  const before = await subscribers();
  const first = wsClient();
  const events = inbox();
  const stop = first.subscribe({ query: RESUMABLE, variables: { id } }, events.sink);
  await untilSubscribers(before + 1);
  await createStudy(study(id, [["1.2.3.6", 1]]));
  const seen = changed(await events.take());
  stop();
  await first.dispose(); // the viewer goes offline...
  await untilSubscribers(before);
  await post(SET_STATUS, { id, status: "cancelled" }); // ...and misses two changes
  await post(DELETE, { id });

  const second = wsClient();
  const resumed = inbox();
  const stopResumed = second.subscribe(
    { query: RESUMABLE, variables: { id, after: seen.position } }, resumed.sink);
  try {
    const missed = [changed(await resumed.take()), changed(await resumed.take())];
    assert.deepEqual(missed.map((e) => [e.action, e.versionId]), [["update", "2"], ["delete", "3"]]);
    assert.notEqual(missed[0].position, seen.position);
    await createStudy(study(id, [["1.2.3.6", 1]])); // the id again: a live event follows
    const live = changed(await resumed.take());
    assert.deepEqual([live.action, live.id], ["create", id]);
    assert.equal(resumed.pending, 0);
  } finally {
    stopResumed();
    await second.dispose();
    await untilSubscribers(before);
  }
});

test("a position the server no longer knows is an error the client can act on", async () => {
  const client = wsClient();
  const results = inbox();
  try {
    client.subscribe({ query: RESUMABLE, variables: { after: "A".repeat(22) } }, results.sink);
    // An execution error: a `next` with errors, then the subscription completes.
    const { next } = await results.take();
    assert.equal(next?.data?.ImagingStudyChanged ?? null, null);
    assert.equal(next.errors[0].extensions.code, "RESUME_UNAVAILABLE");
    assert.match(next.errors[0].message, /subscribe without after/);
    assert.deepEqual(await results.take(), { complete: true });
  } finally {
    await client.dispose();
  }
});
