"""Reference.resource (FHIR GraphQL): #id resolves to a contained resource, ImagingStudy/<id> to
the stored study through the access gate; anything else is an error or, optional, null; the
reads it makes are bounded per operation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import Gql, error
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token

PRIOR = "http://example.org/fhir/StructureDefinition/prior-study"
FOLLOW = """query($id: ID!) { ImagingStudy(id: $id) {
  referrer { reference resource { __typename ... on OtherResource { resourceType id fhirJson } } }
  extension { valueReference { resource(optional: true) {
    ... on ImagingStudy { id status series { uid } } } } } } }"""


def referring(study_id: str, prior: str | None = "prior", patient: str = "demo") -> dict[str, Any]:
    """A study whose referrer is contained and whose extension points at an earlier study."""
    study = demo.study(study_id, 1, 1, patient=patient)
    study["contained"] = [{"resourceType": "Practitioner", "id": "dr", "active": True}]
    study["referrer"] = {"reference": "#dr"}
    if prior is not None:
        study["extension"] = [
            {"url": PRIOR, "valueReference": {"reference": f"ImagingStudy/{prior}"}}
        ]
    return study


async def test_local_and_stored_references_resolve(store: Repository, gql: Gql) -> None:
    await store.create(demo.study("prior", 2, 1))
    await store.create(referring("now"))
    body = await gql(FOLLOW, id="now")
    assert "errors" not in body
    study = body["data"]["ImagingStudy"]
    assert study["referrer"] == {
        "reference": "#dr",
        "resource": {
            "__typename": "OtherResource",
            "resourceType": "Practitioner",
            "id": "dr",
            "fhirJson": {"resourceType": "Practitioner", "id": "dr", "active": True},
        },
    }
    assert study["extension"][0]["valueReference"]["resource"] == {
        "id": "prior",
        "status": "available",
        "series": [{"uid": s["uid"]} for s in demo.study("prior", 2, 1)["series"]],
    }
    # The same through a list: each reference resolves in the study that holds it.
    body = await gql(
        '{ ImagingStudyList(_sort: "_id") { id referrer { resource { '
        "... on OtherResource { id } } } } }"
    )
    assert body["data"]["ImagingStudyList"] == [
        {"id": "now", "referrer": {"resource": {"id": "dr"}}},
        {"id": "prior", "referrer": None},
    ]


async def test_unresolvable_reference_is_an_error_or_null(store: Repository, gql: Gql) -> None:
    await store.create(referring("now", prior="gone"))
    body = await gql('{ ImagingStudy(id: "now") { subject { resource { __typename } } } }')
    found = error(body)
    assert found["extensions"]["code"] == "NOT_FOUND"
    assert found["path"] == ["ImagingStudy", "subject", "resource"]
    assert "Patient/demo" not in found["message"]  # the study's data is not echoed
    body = await gql(
        '{ ImagingStudy(id: "now") { subject { resource(optional: true) { '
        "__typename } } extension { valueReference { resource(optional: true) { "
        "__typename } } } } }"
    )
    assert body == {
        "data": {
            "ImagingStudy": {
                "subject": {"resource": None},
                "extension": [{"valueReference": {"resource": None}}],
            }
        }
    }


async def test_type_keeps_only_that_type(store: Repository, gql: Gql) -> None:
    await store.create(demo.study("prior", 1, 1))
    await store.create(referring("now"))
    body = await gql(
        '{ ImagingStudy(id: "now") { '
        'a: referrer { resource(type: "Practitioner") { __typename } } '
        'b: referrer { resource(type: "Patient") { __typename } } '
        'extension { c: valueReference { resource(type: "Group") { __typename } } '
        'd: valueReference { resource(type: "ImagingStudy") { __typename } } } } }'
    )
    study = body["data"]["ImagingStudy"]
    assert study["a"] == {"resource": {"__typename": "OtherResource"}}
    assert study["b"] == {"resource": None}
    assert study["extension"] == [
        {"c": {"resource": None}, "d": {"resource": {"__typename": "ImagingStudy"}}}
    ]


async def test_another_patients_study_is_a_reference_that_does_not_resolve(
    store: Repository,
) -> None:
    await store.create(demo.study("theirs", 1, 1, patient="p2"))
    await store.create(referring("to-theirs", prior="theirs", patient="p1"))
    await store.create(referring("to-nothing", prior="absent", patient="p1"))
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    headers = {"authorization": f"Bearer {token('patient/ImagingStudy.rs', patient='p1')}"}
    query = (
        "query($id: ID!) { ImagingStudy(id: $id) { extension { valueReference { "
        "resource { ... on ImagingStudy { id } } } } } }"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, store)), base_url="http://test"
    ) as http:
        theirs = await http.post(
            "/graphql", json={"query": query, "variables": {"id": "to-theirs"}}, headers=headers
        )
        nothing = await http.post(
            "/graphql", json={"query": query, "variables": {"id": "to-nothing"}}, headers=headers
        )
    assert theirs.json() == nothing.json()
    assert theirs.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.fixture
def settings() -> Settings:
    return Settings(seed=False, allowed_hosts=("test",), max_reference_reads=2)


async def test_reads_through_references_are_bounded(store: Repository, gql: Gql) -> None:
    await store.create(demo.study("prior", 1, 1))
    for n in range(3):
        await store.create(referring(f"now{n}"))
    body = await gql(
        '{ ImagingStudyList(_count: 3, _sort: "_id") { id extension { '
        "valueReference { resource { ... on ImagingStudy { id } } } } } }"
    )
    codes = {e["extensions"]["code"] for e in body.get("errors") or ()}
    assert codes == {"QUERY_REJECTED"}
    assert "studies read through references" in body["errors"][0]["message"]
    two = await gql(
        '{ ImagingStudyList(_count: 2, _sort: "_id") { extension { '
        "valueReference { resource { ... on ImagingStudy { id } } } } } }"
    )
    assert "errors" not in two
