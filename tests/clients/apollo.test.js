// Apollo Client 4 with HttpLink and GraphQLWsLink, its InMemoryCache configured with the module
// the server serves at /apollo-cache.js (README "Using Apollo Client").
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ApolloClient, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql, split,
} from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import {
  AUTH, BASE, HTTP_URL, SET_STATUS, createStudy, newId, post, study, subscribers,
  readmeViewer, untilSubscribers, wsClient,
} from "./lib.js";

/** The served cache configuration, imported as the ES module it is. */
async function served() {
  const response = await fetch(`${BASE}/apollo-cache.js`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type"), /javascript/);
  const source = await response.text();
  return import(`data:text/javascript,${encodeURIComponent(source)}`);
}

const { possibleTypes, typePolicies, cachedVersions, evictResource } = await served();

function apollo(cache = new InMemoryCache({ possibleTypes, typePolicies })) {
  const http = new HttpLink({ uri: HTTP_URL, headers: { authorization: AUTH } });
  const ws = new GraphQLWsLink(wsClient());
  const link = split(({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  }, ws, http);
  return new ApolloClient({ link, cache });
}

// The README's viewer query, with its variables and fragments.
const README_VIEWER = readmeViewer();
const VIEWER = gql(README_VIEWER.query);

/** What the server answers, without any client or cache in between. */
async function direct(document, variables) {
  return post(document.loc.source.body, variables);
}

/** Apollo adds __typename to every object: compare without it. */
function plain(data) {
  return JSON.parse(JSON.stringify(data, (key, value) => (key === "__typename" ? undefined : value)));
}

test("the README viewer query, with variables and fragments", async () => {
  const client = apollo();
  try {
    const { variables } = README_VIEWER;
    const { data } = await client.query({ query: VIEWER, variables });
    assert.deepEqual(plain(data), await direct(VIEWER, variables));
    assert.equal(data.ImagingStudy.series[0].instance.length, 2);
  } finally {
    client.stop();
  }
});

test("a mutation, and its result in the cache", async () => {
  const client = apollo();
  const id = newId("apollo-mutation");
  await createStudy(study(id, [["1.2.4.1", 1]]));
  try {
    const { data } = await client.mutate({ mutation: gql(SET_STATUS), variables: { id, status: "cancelled" } });
    assert.deepEqual(plain(data.ImagingStudySetStatus), { id, status: "cancelled", meta: { versionId: "2" } });
    const cached = client.readFragment({
      id: client.cache.identify({ __typename: "ImagingStudy", id, meta: { versionId: "2" } }),
      fragment: gql`fragment S on ImagingStudy { status }`,
    });
    assert.equal(cached.status, "cancelled");
  } finally {
    client.stop();
  }
});

test("an error reaches the client with its extensions.code", async () => {
  const client = apollo();
  const id = newId("apollo-error");
  await createStudy(study(id, [["1.2.4.2", 1]]));
  try {
    await assert.rejects(
      client.mutate({ mutation: gql(SET_STATUS), variables: { id, status: "registered" } }),
      (error) => {
        assert.ok(CombinedGraphQLErrors.is(error), String(error));
        assert.equal(error.errors[0].extensions.code, "INVALID_STATUS_TRANSITION");
        assert.equal(error.errors[0].extensions.resource.resourceType, "OperationOutcome");
        return true;
      });
  } finally {
    client.stop();
  }
});

test("a subscription through GraphQLWsLink", async () => {
  const client = apollo();
  const id = newId("apollo-sub");
  const before = await subscribers();
  const events = [];
  let arrived;
  const arrival = new Promise((resolve) => { arrived = resolve; });
  const subscription = client.subscribe({
    query: gql`subscription($id: ID) { ImagingStudyChanged(id: $id) { action id versionId } }`,
    variables: { id },
  }).subscribe({ next: (result) => { events.push(result); arrived(); } });
  try {
    await untilSubscribers(before + 1);
    await createStudy(study(id, [["1.2.4.3", 1]]));
    await arrival;
    assert.deepEqual(plain(events[0].data), { ImagingStudyChanged: { action: "create", id, versionId: "1" } });
  } finally {
    subscription.unsubscribe();
    client.stop();
    await untilSubscribers(before);
  }
});

// Section 5: the cache keeps what the server said apart.

const SERIES = gql`
  query Series($id: ID!) {
    ImagingStudy(id: $id) { id meta { versionId } series { id uid description instance { id uid } } }
  }`;

test("two studies with equal element ids never mix", async () => {
  const [a, b] = [newId("apollo-a"), newId("apollo-b")];
  await createStudy(study(a, [["1.2.5.1", 2, "s1"]]));
  await createStudy(study(b, [["1.2.5.2", 3, "s1"]]));
  const client = apollo();
  const naive = apollo(new InMemoryCache()); // Apollo's default: ImagingStudySeries:s1 is shared
  try {
    for (const c of [client, naive]) {
      await c.query({ query: SERIES, variables: { id: a } });
      await c.query({ query: SERIES, variables: { id: b } });
    }
    const read = async (c, id) => plain((await c.query({
      query: SERIES, variables: { id }, fetchPolicy: "cache-only" })).data);
    assert.deepEqual(await read(client, a), await direct(SERIES, { id: a }));
    assert.deepEqual(await read(client, b), await direct(SERIES, { id: b }));
    // What the configuration prevents: study a shown with study b's series.
    assert.equal((await read(naive, a)).ImagingStudy.series[0].uid, "1.2.5.2");
  } finally {
    client.stop();
    naive.stop();
  }
});

const PAGE = gql`
  query Page($id: ID!, $count: Int, $offset: Int) {
    ImagingStudy(id: $id) { id meta { versionId }
      series { uid instance(_count: $count, _offset: $offset) { uid number } } }
  }`;

test("instance pages accumulate in one list", async () => {
  const id = newId("apollo-pages");
  await createStudy(study(id, [["1.2.6.1", 7]]));
  const client = apollo();
  const naive = apollo(new InMemoryCache());
  const uids = (data) => data.ImagingStudy.series[0].instance.map((i) => i.uid);
  const page = async (count, offset, fetchPolicy = "cache-first") => uids((await client.query({
    query: PAGE, variables: { id, count, offset }, fetchPolicy })).data);
  try {
    assert.deepEqual(await page(3, 0), ["1.2.6.1.1", "1.2.6.1.2", "1.2.6.1.3"]);
    assert.deepEqual(await page(3, 3), ["1.2.6.1.4", "1.2.6.1.5", "1.2.6.1.6"]);
    // The first page is still there, and a window over both pages is read from the cache.
    assert.deepEqual(await page(3, 0, "cache-only"), ["1.2.6.1.1", "1.2.6.1.2", "1.2.6.1.3"]);
    assert.deepEqual(await page(3, 2, "cache-only"), ["1.2.6.1.3", "1.2.6.1.4", "1.2.6.1.5"]);
    // A page not yet fetched is not made up from what is cached.
    const missing = await client.query({ query: PAGE, variables: { id, count: 3, offset: 5 }, fetchPolicy: "cache-only" });
    assert.equal(missing.data, undefined);
    // The short last page tells where the list ends: everything from 2 on comes from the cache.
    assert.deepEqual(await page(3, 6), ["1.2.6.1.7"]);
    assert.deepEqual(await page(null, 2, "cache-only"),
      ["1.2.6.1.3", "1.2.6.1.4", "1.2.6.1.5", "1.2.6.1.6", "1.2.6.1.7"]);
    // What the configuration prevents: Apollo's default cache drops page one for page two.
    for (const offset of [0, 3]) await naive.query({ query: PAGE, variables: { id, count: 3, offset } });
    const dropped = await naive.query({ query: PAGE, variables: { id, count: 3, offset: 0 }, fetchPolicy: "cache-only" });
    assert.equal(dropped.data, undefined);
  } finally {
    client.stop();
    naive.stop();
  }
});

test("a series without instances reads as null, and its pages once it has some", async () => {
  const id = newId("apollo-empty");
  const resource = study(id, [["1.2.9.1", 1]]);
  delete resource.series[0].instance;
  await createStudy({ ...resource, status: "registered" });
  const client = apollo();
  const WHOLE = gql`query Whole($id: ID!) { ImagingStudy(id: $id) { id meta { versionId }
    series { uid instance { uid } } } }`;
  try {
    for (const [query, variables] of [[PAGE, { id, count: 3, offset: 0 }], [WHOLE, { id }]]) {
      const { data, error } = await client.query({ query, variables });
      assert.equal(error, undefined);
      assert.equal(data.ImagingStudy.series[0].instance, null);
      const cached = await client.query({ query, variables, fetchPolicy: "cache-only" });
      assert.equal(cached.data.ImagingStudy.series[0].instance, null);
    }
    await post(`mutation($id: ID!, $u: String!, $i: [ImagingStudySeriesInstanceInput!]!) {
      ImagingStudyAddInstances(id: $id, seriesUid: $u, instances: $i) { id } }`,
      { id, u: "1.2.9.1", i: [{ uid: "1.2.9.1.1", number: 1, sopClass: resource.sopClass ?? {
        system: "urn:ietf:rfc:3986", code: "urn:oid:1.2.840.10008.5.1.4.1.1.2" } }] });
    const { data } = await client.query({ query: PAGE, variables: { id, count: 3, offset: 0 },
      fetchPolicy: "network-only" });
    assert.deepEqual(data.ImagingStudy.series[0].instance.map((i) => i.uid), ["1.2.9.1.1"]);
  } finally {
    client.stop();
  }
});

const HISTORY = gql`
  query History($id: ID!) {
    ImagingStudyHistory(id: $id, _count: 5) { id status meta { versionId }
      series { id uid instance { id uid } } }
  }`;

test("history shows each version", async () => {
  const id = newId("apollo-history");
  await createStudy(study(id, [["1.2.7.1", 1, "s1"]]));
  await post(`mutation($id: ID!) { ImagingStudyAddInstances(id: $id, seriesUid: "1.2.7.1",
    instances: [{ uid: "1.2.7.1.9", sopClass: { system: "urn:ietf:rfc:3986",
    code: "urn:oid:1.2.840.10008.5.1.4.1.1.2" } }]) { id } }`, { id });
  await post(SET_STATUS, { id, status: "cancelled" });
  const client = apollo();
  const naive = apollo(new InMemoryCache());
  try {
    const expected = await direct(HISTORY, { id });
    assert.deepEqual(expected.ImagingStudyHistory.map((v) => v.meta.versionId), ["3", "2", "1"]);
    const { data } = await client.query({ query: HISTORY, variables: { id } });
    assert.deepEqual(plain(data), expected);
    // The latest version, opened on its own, does not overwrite the versions before it.
    await client.query({ query: SERIES, variables: { id } });
    const again = await client.query({ query: HISTORY, variables: { id }, fetchPolicy: "cache-only" });
    assert.deepEqual(plain(again.data), expected);
    // What the configuration prevents: every version shown as the newest.
    const collapsed = plain((await naive.query({ query: HISTORY, variables: { id } })).data);
    assert.deepEqual(collapsed.ImagingStudyHistory.map((v) => v.meta.versionId), ["3", "3", "3"]);
  } finally {
    client.stop();
    naive.stop();
  }
});

test("every cached version of a study is found and evicted by id alone", async () => {
  const id = newId("apollo-evict");
  const other = newId("apollo-evict-other");
  await createStudy(study(id, [["1.2.7.2", 1]]));
  await createStudy(study(other, [["1.2.7.3", 1]]));
  await post(SET_STATUS, { id, status: "cancelled" });
  const client = apollo();
  try {
    await client.query({ query: HISTORY, variables: { id } });
    await client.query({ query: SERIES, variables: { id: other } });
    // cache.identify with the id alone names no entry: the entries carry their versionId.
    assert.equal(client.cache.evict({ id: client.cache.identify({ __typename: "ImagingStudy", id }) }), false);
    assert.equal(cachedVersions(client.cache, "ImagingStudy", id).length, 2);
    assert.equal(evictResource(client.cache, "ImagingStudy", id), 2); // after a delete event, say
    assert.deepEqual(cachedVersions(client.cache, "ImagingStudy", id), []);
    assert.equal(cachedVersions(client.cache, "ImagingStudy", other).length, 1); // the other stays
  } finally {
    client.stop();
  }
});
