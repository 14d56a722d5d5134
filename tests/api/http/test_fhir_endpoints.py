"""FHIR's `$graphql` endpoints: the system one (/$graphql, the same as /graphql) and one study's
(/ImagingStudy/{id}/$graphql, the query's root is the study), under the same rules."""

from __future__ import annotations

import logging

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, study, token

QUERY = '{ ImagingStudy(id: "one") { id status } }'


@pytest.fixture
async def loaded(store: Repository) -> Repository:
    await store.create(demo.study("one", 2, 1))
    return store


async def test_system_endpoint_is_graphql(loaded: Repository, http: httpx.AsyncClient) -> None:
    expected = (await http.post("/graphql", json={"query": QUERY})).json()
    assert expected["data"]["ImagingStudy"]["id"] == "one"
    assert (await http.post("/$graphql", json={"query": QUERY})).json() == expected
    assert (await http.get("/$graphql", params={"query": QUERY})).json() == expected
    assert (await http.post("/%24graphql", json={"query": QUERY})).json() == expected


async def test_instance_endpoint_runs_on_the_study(
    loaded: Repository, http: httpx.AsyncClient
) -> None:
    query = "{ id status series { uid } }"
    answer = (await http.post("/ImagingStudy/one/$graphql", json={"query": query})).json()
    assert answer == {
        "data": {
            "id": "one",
            "status": "available",
            "series": [{"uid": s["uid"]} for s in demo.study("one", 2, 1)["series"]],
        }
    }
    got = await http.get(
        "/ImagingStudy/one/$graphql",
        params={"query": "{ __typename id }"},
        headers={"accept": "application/graphql-response+json"},
    )
    assert got.json() == {"data": {"__typename": "ImagingStudy", "id": "one"}}
    named = (
        "query Q($c: Int) { ...f series(_count: $c) { number } }\nfragment f on ImagingStudy { id }"
    )
    answer = (
        await http.post(
            "/ImagingStudy/one/$graphql",
            json={"query": named, "variables": {"c": 1}, "operationName": "Q"},
        )
    ).json()
    assert answer == {"data": {"id": "one", "series": [{"number": 1}]}}


async def test_instance_endpoint_errors_are_the_callers(
    loaded: Repository, http: httpx.AsyncClient
) -> None:
    missing = (await http.post("/ImagingStudy/nope/$graphql", json={"query": "{ id }"})).json()
    assert missing["data"] is None
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Error paths start below the study, and a line of a location is the caller's line.
    bad = (
        await http.post(
            "/ImagingStudy/one/$graphql", json={"query": "{ id\n series(_count: -1) { uid } }"}
        )
    ).json()
    assert bad["errors"][0]["path"] == ["series"]
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unknown = (
        await http.post("/ImagingStudy/one/$graphql", json={"query": "{ id\n  nonsense }"})
    ).json()
    assert unknown["errors"][0]["locations"][0]["line"] == 2
    assert unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    write = await http.post(
        "/ImagingStudy/one/$graphql",
        json={"query": 'mutation { ImagingStudyDelete(id: "one") { id } }'},
    )
    assert write.status_code == 200
    assert write.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "queries only" in write.json()["errors"][0]["message"]
    aliases = "{ " + " ".join(f"a{n}: id" for n in range(31)) + " }"
    limited = (await http.post("/ImagingStudy/one/$graphql", json={"query": aliases})).json()
    assert limited["errors"][0]["extensions"]["code"] == "QUERY_REJECTED"
    refused = await http.post(
        "/ImagingStudy/one/$graphql", json={"query": "{ id }"}, headers={"accept": "text/csv"}
    )
    assert refused.status_code == 406
    assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_instance_endpoint_goes_through_the_gate(store: Repository) -> None:
    for one in (study("mine", "p1"), study("theirs", "p2")):
        await store.create(one)
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, store)), base_url="http://test"
    ) as http:
        headers = {"authorization": f"Bearer {token('patient/ImagingStudy.rs', patient='p1')}"}
        mine = await http.post(
            "/ImagingStudy/mine/$graphql", json={"query": "{ id }"}, headers=headers
        )
        assert mine.json() == {"data": {"id": "mine"}}
        theirs = await http.post(
            "/ImagingStudy/theirs/$graphql", json={"query": "{ id }"}, headers=headers
        )
        missing = await http.post(
            "/ImagingStudy/absent/$graphql", json={"query": "{ id }"}, headers=headers
        )
        # Another patient's study answers exactly what a missing one answers.
        assert theirs.text.replace("theirs", "absent") == missing.text
        assert theirs.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        anonymous = await http.post("/ImagingStudy/mine/$graphql", json={"query": "{ id }"})
        assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_missing_study_of_the_instance_endpoint_is_audited_as_not_found(
    loaded: Repository, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: the audit recorded OK for an answer the caller got as NOT_FOUND."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    missing = (await http.post("/ImagingStudy/nope/$graphql", json={"query": "{ id }"})).json()
    found = (await http.post("/ImagingStudy/one/$graphql", json={"query": "{ id }"})).json()
    assert missing == {
        "data": None,
        "errors": [
            {
                "message": "ImagingStudy: no ImagingStudy with id 'nope'",
                "extensions": missing["errors"][0]["extensions"],
            }
        ],
    }
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert found == {"data": {"id": "one"}}
    outcomes = [
        r.audit["outcome"]["detail"][0]["text"] for r in caplog.records if r.name == "imaging.audit"
    ]
    assert outcomes == ["NOT_FOUND", "OK"]
