"""What HTTP clients (Apollo, urql, graphql-request) meet: refusals as GraphQL JSON with the
GraphQL-over-HTTP status codes, nullable root fields, Apollo's automatic persisted queries and
the CORS preflights of their headers."""

from __future__ import annotations

import httpx

from store import demo
from store.repository import Repository


async def test_a_failing_mutation_keeps_the_result_of_the_one_before(
        http: httpx.AsyncClient, store: Repository) -> None:
    # Two writes in one request: the first commits; the second is refused. The client must
    # still learn the id the first one created, or it cannot find (or undo) its own write.
    both = """mutation($res: ImagingStudyInput!) {
      made: ImagingStudyCreate(res: $res) { id }
      refused: ImagingStudySetStatus(id: "no-such-study", status: "available") { id } }"""
    body = (await http.post("/graphql", json={
        "query": both, "variables": {"res": demo.study("first", 1, 1)}})).json()
    assert body["data"]["made"] == {"id": "first"}
    assert body["data"]["refused"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert await store.get("first") is not None


async def test_a_failing_list_leaves_the_other_root_fields(http: httpx.AsyncClient,
                                                           store: Repository) -> None:
    await store.create(demo.study("s", 1, 1))
    body = (await http.post("/graphql", json={"query": """{
      one: ImagingStudy(id: "s") { id }
      bad: ImagingStudyList(_count: -1) { id } }"""})).json()
    assert body["data"] == {"one": {"id": "s"}, "bad": None}
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

