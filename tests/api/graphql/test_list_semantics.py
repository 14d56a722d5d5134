"""FHIR GraphQL list and connection semantics: a List without `_count` returns everything or an
error, a Connection cursor carries its search (and works alone), `_count: 0` asks for the
total only."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import Gql, call, codes, error
from tests.support.tokens import study, token

PAGE = """query($c: Int, $cursor: String, $modality: [String!], $sort: String) {
  ImagingStudyConnection(_count: $c, _cursor: $cursor, modality: $modality, _sort: $sort) {
    count pagesize next previous edges { resource { id } } } }"""


async def _load(
    store: Repository, n: int, modality: str = "CT", patient: str = "p", prefix: str = "s"
) -> None:
    for i in range(n):
        one = demo.study(f"{prefix}{i:02d}", 1, 1, patient=patient)
        one["series"][0]["modality"]["coding"][0]["code"] = modality
        await store.create(one)


@pytest.fixture
def settings() -> Settings:
    return Settings(seed=False, allowed_hosts=("test",), list_max_count=25)


async def test_list_without_count_returns_every_match(store: Repository, gql: Gql) -> None:
    await _load(store, 23)  # more than the old default page of 20, within the cap of 25
    body = await gql("{ ImagingStudyList { id } }")
    assert len(body["data"]["ImagingStudyList"]) == 23
    body = await gql("{ ImagingStudyList(_offset: 20) { id } }")
    assert len(body["data"]["ImagingStudyList"]) == 3


async def test_list_past_the_cap_is_an_error_not_a_silent_page(store: Repository, gql: Gql) -> None:
    await _load(store, 30)
    body = await gql("{ ImagingStudyList { id } }")
    assert body["data"]["ImagingStudyList"] is None
    found = error(body)
    assert found["extensions"]["code"] == "BAD_USER_INPUT"
    assert "more than 25 studies match" in found["message"]
    assert "ImagingStudyConnection" in found["message"]
    assert "_count" in found["message"]
    # An explicit _count keeps its meaning; the offset counts towards "everything".
    assert (
        len((await gql("{ ImagingStudyList(_count: 7) { id } }"))["data"]["ImagingStudyList"]) == 7
    )
    assert (
        len((await gql("{ ImagingStudyList(_offset: 10) { id } }"))["data"]["ImagingStudyList"])
        == 20
    )


async def test_a_cursor_alone_continues_its_search(store: Repository, gql: Gql) -> None:
    await _load(store, 5, "CT")
    await _load(store, 4, "MR", prefix="m")
    first = (await gql(PAGE, c=2, modality=["MR"], sort="_id"))["data"]
    first = first["ImagingStudyConnection"]
    ids = [e["resource"]["id"] for e in first["edges"]]
    cursor = first["next"]
    while cursor:
        # Only the cursor: the search (modality, _sort) and the page size come with it.
        page = await gql(
            "query($k: String) { ImagingStudyConnection(_cursor: $k) { "
            "count pagesize next edges { resource { id } } } }",
            k=cursor,
        )
        page = page["data"]["ImagingStudyConnection"]
        assert (page["count"], page["pagesize"]) == (4, 2)
        ids += [e["resource"]["id"] for e in page["edges"]]
        cursor = page["next"]
    assert ids == ["m00", "m01", "m02", "m03"]
    # The same arguments sent again are fine, and the page size may change.
    again = (await gql(PAGE, c=3, cursor=first["next"], modality=["MR"], sort="_id"))["data"]
    assert [e["resource"]["id"] for e in again["ImagingStudyConnection"]["edges"]] == ["m02", "m03"]


@pytest.mark.parametrize("changed", [{"modality": ["CT"]}, {"sort": "-_id"}])
async def test_arguments_that_differ_from_the_cursor_are_refused(
    store: Repository, gql: Gql, changed: dict[str, Any]
) -> None:
    await _load(store, 3, "MR")
    first = (await gql(PAGE, c=1, modality=["MR"], sort="_id"))["data"]
    body = await gql(
        PAGE,
        **{
            "c": 1,
            "cursor": first["ImagingStudyConnection"]["next"],
            "modality": ["MR"],
            "sort": "_id",
            **changed,
        },
    )
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "differs from the search the _cursor continues" in error(body)["message"]


async def test_cursor_hides_what_it_carries(store: Repository, gql: Gql) -> None:
    await _load(store, 3, "XA", prefix="confidential")
    body = await gql('{ ImagingStudyConnection(_count: 1, modality: "XA") { first next } }')
    for cursor in body["data"]["ImagingStudyConnection"].values():
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        for clear in (b'"XA"', b"modality", b"confidential"):  # search, boundary row id
            assert clear not in raw
    cursor = body["data"]["ImagingStudyConnection"]["next"]
    tampered = cursor[:20] + ("A" if cursor[20] != "A" else "B") + cursor[21:]
    body = await gql(
        "query($k: String) { ImagingStudyConnection(_cursor: $k) { count } }", k=tampered
    )
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_count_zero_is_the_total_only(store: Repository, gql: Gql) -> None:
    await _load(store, 4, "MR")
    body = await gql(
        '{ ImagingStudyConnection(_count: 0, modality: "MR") { count pagesize '
        "next edges { resource { id } } } }"
    )
    assert body["data"]["ImagingStudyConnection"] == {
        "count": 4,
        "pagesize": 0,
        "next": None,
        "edges": [],
    }
    body = await gql("{ ImagingStudyConnection(_count: -1) { count } }")
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_cursor_never_widens_another_tokens_search(store: Repository) -> None:
    for i in range(3):
        await store.create(study(f"p1-{i}", "p1"))
        await store.create(study(f"p2-{i}", "p2"))
    settings = Settings(
        seed=False,
        auth="jwt",
        jwt_secret="test-secret-of-32-bytes-or-more!!",
        jwt_audience="imaging-api",
        jwt_issuer="https://login.example",
    )
    app = create_app(settings, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        query = (
            "query($k: String) { ImagingStudyConnection(_count: 1, _cursor: $k) { "
            "next edges { resource { id subject { reference } } } } }"
        )
        everyone = await call(http, token("system/ImagingStudy.rs"), query)
        cursor = everyone["data"]["ImagingStudyConnection"]["next"]
        as_p1 = await call(
            http,
            token("patient/ImagingStudy.rs", patient="p1"),
            "query($k: String) { ImagingStudyConnection(_cursor: $k) { "
            "edges { resource { id } } } }",
            k=cursor,
        )
        assert codes(as_p1) == {"BAD_USER_INPUT"}
        assert "another query" in as_p1["errors"][0]["message"]
        # p1's own cursor continues p1's search only, and p2's token cannot use it.
        mine = await call(http, token("patient/ImagingStudy.rs", patient="p1"), query)
        cursor = mine["data"]["ImagingStudyConnection"]["next"]
        more = await call(http, token("patient/ImagingStudy.rs", patient="p1"), query, k=cursor)
        assert more["data"]["ImagingStudyConnection"]["edges"][0]["resource"]["subject"] == {
            "reference": "Patient/p1"
        }
        as_p2 = await call(http, token("patient/ImagingStudy.rs", patient="p2"), query, k=cursor)
        assert codes(as_p2) == {"BAD_USER_INPUT"}
        assert as_p2["data"]["ImagingStudyConnection"] is None


async def test_id_and_its_alias(store: Repository, gql: Gql) -> None:
    await _load(store, 1)
    body = await gql('{ a: ImagingStudy(_id: "s00") { id } b: ImagingStudy(id: "s00") { id } }')
    assert body["data"] == {"a": {"id": "s00"}, "b": {"id": "s00"}}
    for query in ("{ ImagingStudy { id } }", '{ ImagingStudy(id: "s00", _id: "x") { id } }'):
        body = await gql(query)
        assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
        assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == ["id"]


@pytest.mark.parametrize(
    "query",
    [
        "{ ImagingStudyConnection { ...F } } fragment F on ImagingStudyConnection { count }",
        "{ ImagingStudyConnection { ... on ImagingStudyConnection { count } } }",
        "{ ImagingStudyConnection { ...F } } fragment F on ImagingStudyConnection "
        "{ count edges { resource { id } } }",
    ],
)
async def test_fragments_on_the_connection_are_answered(
    store: Repository, gql: Gql, query: str
) -> None:
    """The fields a fragment selects on a Connection are read like the same fields written
    out (they were answered null: the resolver looked at the selection shallowly)."""
    await _load(store, 3)
    connection = (await gql(query))["data"]["ImagingStudyConnection"]
    assert connection["count"] == 3
    if "edges" in query:
        assert len(connection["edges"]) == 3
