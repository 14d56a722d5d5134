"""The fhir-test-cases' Patient/example as an ImagingStudy (tests/api/graphql/test_conformance.py
explains the translation), and a case's query run on it."""

from __future__ import annotations

from typing import Any

from store.interop import demo
from tests.support.graphql import CREATE, Gql


def patient_like() -> dict[str, Any]:
    """Patient/example of the cases, as an ImagingStudy (see test_conformance's docstring)."""
    study = demo.study("p", 3, 1)
    study["identifier"] = [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}]
    given = [["Peter", "James"], ["Jim"], ["Peter", "James"]]
    family = ["Chalmers", None, "Windsor"]
    use = ["official", "usual", "maiden"]
    for series, g, f, u in zip(study["series"], given, family, use, strict=True):
        series["endpoint"] = [{"reference": f"Endpoint/{name}"} for name in g]
        series["modality"] = {"coding": [{"code": u}]}
        series.pop("description", None)
        if f:
            series["description"] = f
    return study


async def run(gql: Gql, body: str, **variables: Any) -> dict[str, Any]:
    """`body` run on the Patient-like study, as the cases run on `Patient/example/$graphql`."""
    created = await gql(CREATE, res=patient_like())
    assert "errors" not in created, created
    # The case declares `$var : Boolean`; GraphQL requires Boolean! for @include(if:).
    declared = "($var: Boolean!)" if "$var" in body else ""
    return await gql(f'query{declared} {{ ImagingStudy(id: "p") {{ {body} }} }}', **variables)
