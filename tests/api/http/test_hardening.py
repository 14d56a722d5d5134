"""GraphQL hardening: query limits refused before any store access, HTTP rules (GET for
queries only, JSON bodies only, no batches, a body cap), production mode, CORS, gzip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error


def _rejected(body: dict[str, Any], what: str, limit: int) -> None:
    extensions = error(body)["extensions"]
    assert extensions["code"] == "QUERY_REJECTED"
    assert extensions["limit"] == limit
    assert what in error(body)["message"]


async def test_depth_limit(gql: Gql, untouched: list[str]) -> None:
    deep = (
        '{ ImagingStudy(id: "x") { '
        + "identifier { assigner { " * 8
        + "display"
        + " } }" * 8
        + " } }"
    )
    body = await gql(deep)
    _rejected(body, "depth", 15)
    assert error(body)["extensions"]["measured"] == 18
    assert untouched == []


async def test_alias_limit(gql: Gql, untouched: list[str]) -> None:
    body = await gql(
        "{ " + " ".join(f'a{n}: ImagingStudy(id: "{n}") {{ id }}' for n in range(31)) + " }"
    )
    _rejected(body, "aliases", 30)
    assert untouched == []


async def test_token_limit(gql: Gql, untouched: list[str]) -> None:
    body = await gql('{ ImagingStudy(id: "x") { ' + "id " * 10_001 + "} }")
    _rejected(body, "tokens", 10_000)
    assert untouched == []


async def test_a_syntax_error_quoting_the_token_message_is_not_the_token_limit(gql: Gql) -> None:
    """The token limit is told by where the parser stopped, not by words in its message: a
    query whose syntax error quotes the parser's token-limit sentence stays a syntax error."""
    body = await gql('{ "Document contains more than 5 tokens" }')
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert "Syntax Error" in error(body)["message"]
    assert "limit" not in error(body)["extensions"]


@pytest.mark.parametrize(
    ("query", "limit", "over"),
    [
        ("{ a b c d e", 4, True),
        ("{ a b c d e", 6, False),
        ("{ a # x\n# y\n b", 4, True),
        ("{ a # x\n b", 4, False),
        ("{ a ! b c d }", 2, True),
        ("{ a ! b c d }", 3, True),
        ("{ a ! }", 4, False),
        ('{ a "\\z" b c d e }', 2, False),
        ('{ a "\\z" b c d e }', 4, False),
        ('{ "Document contains more than 2 tokens" }', 2, True),
    ],
)
def test_a_parse_error_is_the_token_limit_when_the_document_is_over_it(
    query: str, limit: int, over: bool
) -> None:
    """token_rejection counts tokens and comments as the parser does, whatever the message:
    a document over the limit is refused as such (even when the parser met a syntax error
    first, `{ a ! b c d }`); a syntax or lexical error before the limit stays one (a bad
    escape as the token past the limit is one: the count stops at a lexical error)."""
    from graphql import GraphQLError, parse

    from api.graphql.limits import token_rejection

    with pytest.raises(GraphQLError) as parsed:
        parse(query, max_tokens=limit)
    assert (token_rejection(query, parsed.value, limit) is not None) == over
    if "Document contains more than" in parsed.value.message:
        assert over  # wherever graphql-core says its limit was reached, so does the count


async def test_cost_limit_weighs_lists_by_their_count(gql: Gql, untouched: list[str]) -> None:
    body = await gql("{ ImagingStudyList(_count: 1000) { series { instance { uid } } } }")
    _rejected(body, "cost", 2_000_000)
    body = await gql(
        "query($c: Int) { ImagingStudyList(_count: $c) { series { instance { uid } } } }", c=1000
    )
    _rejected(body, "cost", 2_000_000)
    assert untouched == []


async def test_legitimate_viewer_queries_pass(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("v", 2, 3))
    whole = await gql(
        '{ ImagingStudy(id: "v") { id status started subject { reference } '
        "series { uid number modality { coding { system code display } } "
        "description numberOfInstances bodySite { concept { text } } "
        "performer { actor { display } } instance { uid number title sopClass "
        "{ system code display } } } } }"
    )
    assert "errors" not in whole
    worklist = await gql(
        '{ ImagingStudyConnection(_count: 50, modality: "CT") { count next '
        "edges { resource { id started status description modality "
        "{ coding { code } } subject { reference display } } } } }"
    )
    assert "errors" not in worklist


async def test_introspection_is_not_limited_in_development(gql: Gql) -> None:
    from graphql import get_introspection_query

    body = await gql(get_introspection_query(descriptions=True))
    assert "errors" not in body


async def test_http_rules(http: httpx.AsyncClient) -> None:
    get = await http.get("/graphql", params={"query": "{ __typename }"})
    assert get.json() == {"data": {"__typename": "Query"}}
    mutation = await http.get(
        "/graphql", params={"query": 'mutation { ImagingStudyDelete(id: "x") { deleted } }'}
    )
    assert mutation.status_code == 405  # refused before execution
    assert "deleted" not in mutation.text
    for content_type, body in [
        ("text/plain", '{"query": "{ __typename }"}'),
        ("application/x-www-form-urlencoded", "query=%7B__typename%7D"),
        ("multipart/form-data; boundary=x", "--x--"),
    ]:
        refused = await http.post("/graphql", content=body, headers={"content-type": content_type})
        assert refused.status_code == 415, content_type
        assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    batch = await http.post("/graphql", json=[{"query": "{ __typename }"}] * 2)
    assert batch.status_code == 400


async def test_oversized_bodies_get_413(http: httpx.AsyncClient) -> None:
    big = b'{"query": "' + b" " * (8 * 1024 * 1024) + b'{ __typename }"}'
    said = await http.post("/graphql", content=big, headers={"content-type": "application/json"})
    assert said.status_code == 413
    assert said.headers["cache-control"] == "no-store"  # as every answer (found black-box)

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(9):
            yield b" " * (1024 * 1024)

    streamed = await http.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


@pytest.fixture
async def production(store: Repository) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(seed=False, env="production", allowed_hosts=("test",)), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client


async def test_production_mode(production: httpx.AsyncClient) -> None:
    introspect = await production.post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}
    )
    assert introspect.json()["data"] is None
    assert {e["extensions"]["code"] for e in introspect.json()["errors"]} == {"BAD_USER_INPUT"}
    typename = await production.post("/graphql", json={"query": "{ __typename }"})
    assert typename.json() == {"data": {"__typename": "Query"}}
    typo = await production.post("/graphql", json={"query": '{ ImagingStudi(id: "x") { id } }'})
    assert "Did you mean" not in typo.text
    page = await production.get("/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in page.text.lower()
    assert (
        await production.get("/static/vendor/graphiql@3.8.3/graphiql.min.js")
    ).status_code == 404


async def test_suggestions_stay_in_development(gql: Gql) -> None:
    body = await gql('{ ImagingStudi(id: "x") { id } }')
    assert "Did you mean" in error(body)["message"]


async def test_cors_gzip_and_request_id(store: Repository) -> None:
    app = create_app(
        Settings(seed=False, cors_origins=("https://viewer.example",), allowed_hosts=("test",)),
        store,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        for n in range(30):
            await client.post(
                "/graphql", json={"query": CREATE, "variables": {"res": demo.study(f"g{n}", 1, 5)}}
            )
        response = await client.post(
            "/graphql",
            json={
                "query": "{ ImagingStudyList(_count: 30) { id series { uid instance { uid } } } }"
            },
            headers={
                "origin": "https://viewer.example",
                "accept-encoding": "gzip",
                "x-request-id": "abc123",
            },
        )
        assert response.headers["access-control-allow-origin"] == "https://viewer.example"
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["x-request-id"] == "abc123"
        assert len(response.json()["data"]["ImagingStudyList"]) == 30
        other = await client.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
