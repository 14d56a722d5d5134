"""The data re-organisation directives, translated from the fhir-test-cases `r5/graphql` cases
(flatten, flatten-first, flatten-singleton1..3, flatten-slice1..2, directive-*) to
ImagingStudy: the Patient example's `identifier` (one) stays `identifier`, its three `name`s
become three `series` (`given` a list: the series' `endpoint` references; `family`, present on
two of three: `description`; `use`: `modality.coding.code`). Both executors agree on them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from store import demo
from tests.api.test_execution import _both
from tests.conftest import Gql
from tests.helpers import CREATE, error


def patient_like() -> dict[str, Any]:
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
    created = await gql(CREATE, res=patient_like())
    assert "errors" not in created, created
    # The case declares `$var : Boolean`; GraphQL requires Boolean! for @include(if:).
    declared = "($var: Boolean!)" if "$var" in body else ""
    return await gql(f'query{declared} {{ ImagingStudy(id: "p") {{ {body} }} }}', **variables)


def eps(*names: str) -> list[str]:
    return [f"Endpoint/{n}" for n in names]


async def test_flatten(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system value } status
      series @flatten { number endpoint @flatten { reference } description }""")
    assert body == {"data": {"ImagingStudy": {
        "system": ["urn:oid:1.2.36.146.595.217.0.1"], "value": ["12345"], "status": "available",
        "number": [1, 2, 3], "reference": eps("Peter", "James", "Jim", "Peter", "James"),
        "description": ["Chalmers", "Windsor"]}}}


async def test_flatten_first(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system value } status
      series @flatten { endpoint @first @flatten { reference } description }""")
    data = body["data"]["ImagingStudy"]
    assert data["reference"] == eps("Peter", "Jim", "Peter")
    assert data["description"] == ["Chalmers", "Windsor"]


async def test_flatten_singleton1(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system @singleton value @singleton } status
      series @flatten { endpoint @flatten { reference } description }""")
    data = body["data"]["ImagingStudy"]
    assert data["system"] == "urn:oid:1.2.36.146.595.217.0.1"
    assert data["value"] == "12345"
    assert data["description"] == ["Chalmers", "Windsor"]


async def test_flatten_singleton2_is_an_error(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system @singleton value @singleton }
      series @flatten { endpoint @flatten { reference } description @singleton }""")
    assert body["data"] is None
    found = error(body)
    assert found["extensions"]["code"] == "BAD_USER_INPUT"
    assert "@singleton" in found["message"]
    assert "description" in found["message"]


async def test_flatten_singleton3(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system @singleton value @singleton } status
      series @flatten @first { endpoint @flatten { reference } description @singleton }""")
    assert body == {"data": {"ImagingStudy": {
        "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345", "status": "available",
        "reference": eps("Peter", "James"), "description": "Chalmers"}}}


async def test_flatten_slice1_by_a_path(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system value } status
      series @flatten @slice(path: "modality.coding.code") {
        endpoint @flatten { reference } description @singleton } """)
    assert body == {"data": {"ImagingStudy": {
        "system": ["urn:oid:1.2.36.146.595.217.0.1"], "value": ["12345"], "status": "available",
        "reference.official": eps("Peter", "James"), "description.official": "Chalmers",
        "reference.usual": eps("Jim"), "reference.maiden": eps("Peter", "James"),
        "description.maiden": "Windsor"}}}


async def test_flatten_slice2_by_index(gql: Gql) -> None:
    body = await run(gql, """identifier @flatten { system value } status
      series @flatten @slice(path: "$index") {
        endpoint @flatten { reference } description @singleton } """)
    data = body["data"]["ImagingStudy"]
    assert {k: v for k, v in data.items() if "." in k} == {
        "reference.0": eps("Peter", "James"), "description.0": "Chalmers",
        "reference.1": eps("Jim"), "reference.2": eps("Peter", "James"),
        "description.2": "Windsor"}


@pytest.mark.parametrize(("directive", "variables", "present"), [
    ("@include(if: true)", {}, True), ("@skip(if: true)", {}, False),
    ("@include(if: $var)", {"var": True}, True)])
async def test_directive_include_skip_variable(gql: Gql, directive: str,
                                               variables: dict[str, Any], present: bool) -> None:
    body = await run(gql, f"identifier {directive} {{ system value }} status", **variables)
    assert body.get("data"), body
    assert ("identifier" in body["data"]["ImagingStudy"]) is present


async def test_unknown_directives_stay_errors(gql: Gql) -> None:
    body = await run(gql, "identifier @flattenAll { value }")
    assert "Unknown directive '@flattenAll'" in error(body)["message"]


async def test_first_without_flatten_is_an_object_and_mixing_with_slice_is_refused(
        gql: Gql) -> None:
    body = await run(gql, "series @first { number } none: identifier(system: \"x\") @first "
                     "{ value }")
    assert body["data"]["ImagingStudy"] == {"series": {"number": 1}, "none": None}
    body = await gql('{ ImagingStudy(id: "p") { series @first @slice(path: "$index") { number '
                     "} } }")
    assert "@slice and @first" in error(body)["message"]


async def test_collating_different_types_under_one_name_is_an_error(gql: Gql) -> None:
    body = await run(gql, "subject @flatten { display: reference } "
                     "series @flatten { display: modality { text } }")
    assert "same type" in error(body)["message"]


def test_both_executors_agree_on_directives() -> None:
    queries = [
        '{ ImagingStudy(id: "p") { identifier @flatten { system value } series @flatten '
        '@slice(path: "modality.coding.code") { endpoint @flatten { reference } description '
        "@singleton } } }",
        '{ ImagingStudy(id: "p") { series @flatten { number instance @first { uid } } } }',
        '{ ImagingStudyList { id series @first @flatten { number } } }',
    ]

    async def check() -> None:
        for query in queries:
            result = await _both(query, [patient_like()], True, None)
            assert result.data is not None, result.errors
    asyncio.run(check())
