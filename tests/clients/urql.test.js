// urql's core client (document cache, fetch) runs the README viewer query.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, cacheExchange, fetchExchange, gql } from "@urql/core";
import { AUTH, HTTP_URL, post, readmeViewer } from "./lib.js";

const { query: VIEWER, variables } = readmeViewer();

test("urql runs the README viewer query", async () => {
  const client = new Client({
    url: HTTP_URL,
    exchanges: [cacheExchange, fetchExchange],
    fetchOptions: { headers: { authorization: AUTH } },
    preferGetMethod: false,
  });
  const result = await client.query(gql(VIEWER), variables).toPromise();
  assert.equal(result.error, undefined, String(result.error));
  const plain = JSON.parse(JSON.stringify(result.data, (k, v) => (k === "__typename" ? undefined : v)));
  assert.deepEqual(plain, await post(VIEWER, variables));
  assert.equal(result.data.ImagingStudy.series[0].instance.length, 2);

  const refused = await client.query(gql`{ ImagingStudyList(_count: -1) { id } }`, {}).toPromise();
  assert.equal(refused.error.graphQLErrors[0].extensions.code, "BAD_USER_INPUT");
});
