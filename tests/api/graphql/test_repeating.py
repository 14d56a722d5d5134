"""Arguments on every repeating element (HL7 "Using GraphQL with FHIR", List Navigation):
field filters, `fhirpath`, then `_offset`/`_count` on the filtered list; through the store,
whose projection must load what the filters read; and their price in the cost model."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import parse

from api.graphql.limits import FHIRPATH_COST, Limits, limit_errors
from api.settings import Settings
from store.interop import demo
from store.mongo import reads
from tests.support.graphql import CREATE, Gql, error, expressions


@pytest.fixture
def settings() -> Settings:
    # Studies of at most 1,000 instances: a `fhirpath` on them fits the cost limit.
    return Settings(seed=False, allowed_hosts=("test",), max_instances=1_000)


QUERY = 'query { ImagingStudy(id: "r") { BODY } }'


def study() -> dict[str, Any]:
    found = demo.study("r", 3, 4)
    found["identifier"].append({"system": "urn:other", "value": "A-1"})
    found["extension"] = [
        {"url": "http://a", "valueString": "A"},
        {"url": "http://b", "valueString": "B"},
        {"url": "http://a", "valueString": "A2"},
    ]
    found["series"][1]["modality"]["coding"].append({"system": "urn:local", "code": "X"})
    found["series"][2]["instance"][1]["title"] = "key image"
    return found


async def read(gql: Gql, body: str) -> Any:
    created = await gql(CREATE, res=study())
    assert "errors" not in created, created
    return await gql(QUERY.replace("BODY", body))


async def test_field_filters_keep_the_items_whose_sub_element_equals(gql: Gql) -> None:
    body = await read(
        gql,
        """
      dicom: identifier(system: "urn:dicom:uid") { system }
      other: identifier(system: "urn:other", value: "A-1") { value }
      none: identifier(system: "urn:other", value: "B") { value }
      ext: extension(url: "http://a") { valueString }
      series(number: 2) { modality { coding(system: "urn:local") { code } } } """,
    )
    data = body["data"]["ImagingStudy"]
    assert data["dicom"] == [{"system": "urn:dicom:uid"}]
    assert data["other"] == [{"value": "A-1"}]
    assert data["none"] == []
    assert data["ext"] == [{"valueString": "A"}, {"valueString": "A2"}]
    assert data["series"] == [{"modality": {"coding": [{"code": "X"}]}}]


async def test_offset_and_count_apply_to_the_filtered_list(gql: Gql) -> None:
    body = await read(
        gql,
        """
      second: extension(url: "http://a", _offset: 1) { valueString }
      first: extension(fhirpath: "url = 'http://a'", _count: 1) { valueString } """,
    )
    data = body["data"]["ImagingStudy"]
    assert data["second"] == [{"valueString": "A2"}]
    assert data["first"] == [{"valueString": "A"}]


async def test_fhirpath_selects_items_of_any_repeating_element(gql: Gql) -> None:
    body = await read(
        gql,
        """
      performers: series(_count: 1) {
        performer(fhirpath: "actor.reference.startsWith('Practitioner/')") { actor { reference } }
      }
      series(fhirpath: "modality.coding.where(code = 'X').exists()") { number } """,
    )
    data = body["data"]["ImagingStudy"]
    assert data["performers"] == [
        {"performer": [{"actor": {"reference": "Practitioner/demo-technologist"}}]}
    ]
    assert data["series"] == [{"number": 2}]


async def test_filters_read_elements_the_query_does_not_select(gql: Gql) -> None:
    """The store loads only what a query selects: the filtered elements must be loaded too."""
    body = await read(
        gql,
        """
      byDescription: series(description: "Demo series 2") { number }
      byPath: series(fhirpath: "description = 'Demo series 3'") { number }
      keys: series(number: 3, _count: 1) { instance(fhirpath: "title.exists()") { number } }
      titled: series(number: 3) { instance(title: "key image") { number } } """,
    )
    data = body["data"]["ImagingStudy"]
    assert data["byDescription"] == [{"number": 2}]
    assert data["byPath"] == [{"number": 3}]
    assert data["keys"] == [{"instance": [{"number": 2}]}]
    assert data["titled"] == [{"instance": [{"number": 2}]}]


async def test_the_store_is_asked_for_the_elements_the_filters_read(
    gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real MongoDB returns only the projected elements (the embedded store may return
    more), so the projection itself is checked."""
    asked: list[dict[str, int] | None] = []
    original = reads.projection

    def spy(fields: Any, *extra: str) -> dict[str, int] | None:
        asked.append(original(fields, *extra))
        return asked[-1]

    monkeypatch.setattr(reads, "projection", spy)
    await read(
        gql,
        """a: series(description: "x") { number }
      b: series(_count: 1) { instance(fhirpath: "title.exists() and sopClass.code = 'c'") {
        number } }""",
    )
    assert {"series.description", "series.instance.title", "series.instance.sopClass"} <= set(
        asked[-1] or ()
    )
    await gql(QUERY.replace("BODY", 'series(fhirpath: "descendants().count() > 1") { number }'))
    assert "series" in (asked[-1] or ())  # descendants() reads every element of the series


async def test_series_and_instance_keep_their_own_filters(gql: Gql) -> None:
    created = await gql(CREATE, res=study())
    assert "errors" not in created
    uid = study()["series"][1]["uid"]
    body = await gql(
        QUERY.replace(
            "BODY",
            f'series(uid: "x,{uid}", modality: "CT") {{ number '
            "instance(_count: 1, _offset: 1) { number } }",
        )
    )
    assert body["data"]["ImagingStudy"]["series"] == [{"number": 2, "instance": [{"number": 2}]}]


async def test_a_bad_fhirpath_is_bad_user_input_naming_the_element(gql: Gql) -> None:
    body = await read(gql, 'identifier(fhirpath: "system = \\"x\\"") { value }')
    found = error(body)
    assert found["extensions"]["code"] == "BAD_USER_INPUT"
    assert expressions(body) == ["ImagingStudy.identifier(fhirpath)"]
    assert "not a FHIRPath expression this server evaluates" in found["message"]


def cost(query: str) -> int:
    """The cost the limits measure, read from the refusal of a zero cost limit."""
    errors = limit_errors(Limits(max_cost=0), parse(query), {})
    return int(errors[0].extensions["measured"])  # type: ignore[index]


def test_a_count_never_changes_the_price_of_an_uncapped_list() -> None:
    plain = cost('{ ImagingStudy(id: "x") { identifier { value } } }')
    assert cost('{ ImagingStudy(id: "x") { identifier(_count: 1000) { value } } }') == plain
    assert cost('{ ImagingStudy(id: "x") { identifier(system: "s") { value } } }') == plain


def test_fhirpath_is_priced_on_every_item_whatever_the_count() -> None:
    limits = Limits()
    per_series = -(-limits.max_instances // limits.max_series)
    paged = cost('{ ImagingStudy(id: "x") { series { instance(_count: 1) { uid } } } }')
    filtered = cost(
        '{ ImagingStudy(id: "x") { series { instance(_count: 1, fhirpath: '
        '"number > 1") { uid } } } }'
    )
    assert filtered - paged == limits.max_series * FHIRPATH_COST * per_series


def test_a_refusal_for_fhirpath_says_what_to_do() -> None:
    query = '{ ImagingStudy(id: "x") { series { instance(fhirpath: "number > 1") { uid } } } }'
    [refusal] = limit_errors(Limits(), parse(query), {})
    assert refusal.extensions["code"] == "QUERY_REJECTED"  # type: ignore[index]
    assert "instead of fhirpath on instance" in refusal.message
