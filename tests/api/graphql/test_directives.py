"""The data re-organisation directives beyond the fhir-test-cases cases (those, flatten*,
directive-*, are translated in tests/api/graphql/test_conformance.py, on the same Patient-like
study): unknown directives, @first alone, collating two types, and both executors agreeing."""

from __future__ import annotations

import asyncio

from tests.support.conformance import patient_like, run
from tests.support.differential import both
from tests.support.graphql import Gql, error


async def test_unknown_directives_stay_errors(gql: Gql) -> None:
    body = await run(gql, "identifier @flattenAll { value }")
    assert "Unknown directive '@flattenAll'" in error(body)["message"]


async def test_first_without_flatten_is_an_object_and_mixing_with_slice_is_refused(
    gql: Gql,
) -> None:
    body = await run(gql, 'series @first { number } none: identifier(system: "x") @first { value }')
    assert body["data"]["ImagingStudy"] == {"series": {"number": 1}, "none": None}
    body = await gql(
        '{ ImagingStudy(id: "p") { series @first @slice(path: "$index") { number } } }'
    )
    assert "@slice and @first" in error(body)["message"]


async def test_collating_different_types_under_one_name_is_an_error(gql: Gql) -> None:
    body = await run(
        gql,
        "subject @flatten { display: reference } series @flatten { display: modality { text } }",
    )
    assert "same type" in error(body)["message"]


async def test_a_plain_field_after_flattened_ones_of_its_name_collates_with_them(gql: Gql) -> None:
    """The study's own `id` after the series' flattened ids was answered alone: the series'
    values were lost, silently, while the other order collated them."""
    after = await run(gql, "series @flatten { id: number } id")
    before = await gql('{ ImagingStudy(id: "p") { id series @flatten { id: number } } }')
    assert "errors" in after  # ID and Int do not collate: said, not lost
    assert "same type" in error(after)["message"]
    assert "same type" in error(before)["message"]
    both = await gql(
        '{ ImagingStudy(id: "p") { series @flatten { n: number } n: numberOfSeries } }'
    )
    assert both["data"]["ImagingStudy"] == {"n": [1, 2, 3, 3]}


def test_both_executors_agree_on_directives() -> None:
    queries = [
        '{ ImagingStudy(id: "p") { identifier @flatten { system value } series @flatten '
        '@slice(path: "modality.coding.code") { endpoint @flatten { reference } description '
        "@singleton } } }",
        '{ ImagingStudy(id: "p") { series @flatten { number instance @first { uid } } } }',
        "{ ImagingStudyList { id series @first @flatten { number } } }",
    ]

    async def check() -> None:
        for query in queries:
            result = await both(query, [patient_like()], True, None)
            assert result.data is not None, result.errors

    asyncio.run(check())
