"""The one selection walker (api/graphql/selection.py): a field reached through a named
fragment, an inline fragment, a fragment inside a fragment, an alias or @skip/@include (read
from variables and their defaults) is read by the projection, priced by the cost limit, counted
by the budget, named by the audit and seen by the resolver alike; merged fields and the chosen
operation are read as the executor reads them; and the limits' walk stays linear."""

from __future__ import annotations

import gc
import logging
from typing import Any

import httpx
import pytest
from graphql import DocumentNode, parse

from api.graphql.budget import Shape
from api.graphql.limits import Limits, limit_errors
from api.graphql.projection import study_paths
from api.graphql.schema import schema
from api.graphql.selection import Field, Fold, Selection, Walker, operation_of, root_fields
from store.interop import demo
from tests.support.graphql import CREATE, Gql

PLAIN = 'query { ImagingStudy(id: "sel") { id description } }'
# The same selection (the root field and `description`) reached in each way a query can.
WAYS: dict[str, tuple[str, dict[str, Any]]] = {
    "named fragment": (
        'query { ...Q } fragment Q on Query { ImagingStudy(id: "sel") { id ...S } } '
        "fragment S on ImagingStudy { description }",
        {},
    ),
    "inline fragment": (
        'query { ... on Query { ImagingStudy(id: "sel") { id ... on ImagingStudy '
        "{ description } } } }",
        {},
    ),
    "fragment inside a fragment": (
        "query { ...Q } fragment Q on Query { ...R } "
        'fragment R on Query { ImagingStudy(id: "sel") { ...S } } '
        "fragment S on ImagingStudy { id ...T } fragment T on ImagingStudy { description }",
        {},
    ),
    "alias": ('query { study: ImagingStudy(id: "sel") { id text: description } }', {}),
    "@include with a variable": (
        'query($y: Boolean!) { ImagingStudy(id: "sel") @include(if: $y) '
        "{ id description @include(if: $y) } }",
        {"y": True},
    ),
    "@skip with a variable's default": (
        'query($n: Boolean = false) { ImagingStudy(id: "sel") @skip(if: $n) '
        "{ id ... @skip(if: $n) { description } } }",
        {},
    ),
}
# The same query with `description` left out by the directive (the root field stays).
SKIPPED: dict[str, tuple[str, dict[str, Any]]] = {
    "@include(if: false)": (
        'query($y: Boolean!) { ImagingStudy(id: "sel") { id description @include(if: $y) } }',
        {"y": False},
    ),
    "@skip(if: true) by default": (
        'query($n: Boolean = true) { ImagingStudy(id: "sel") { id ...S @skip(if: $n) } } '
        "fragment S on ImagingStudy { description }",
        {},
    ),
}


def _study(document: DocumentNode, variables: dict[str, Any]) -> Selection:
    """The selection under the ImagingStudy root field, as the walker reads it."""
    operation = operation_of(document)
    assert operation is not None
    walker = Walker.of_document(document, variables, operation, schema._schema)
    [root] = [f for f in walker.fields([operation.selection_set]) if f.name == "ImagingStudy"]
    return root.below("ImagingStudy")


def _cost(document: DocumentNode, variables: dict[str, Any]) -> int:
    """The cost the limit measures (every query is over a limit of 0)."""
    [error] = limit_errors(Limits(max_cost=0), document, variables)
    assert error.extensions is not None
    measured = error.extensions["measured"]
    assert isinstance(measured, int)
    return measured


@pytest.fixture
async def study(gql: Gql) -> None:
    created = await gql(CREATE, res={**demo.study("sel", 1, 1), "description": "Chest CT"})
    assert "errors" not in created, created


@pytest.mark.parametrize("way", WAYS)
async def test_every_reader_sees_a_field_however_it_is_selected(
    gql: Gql, study: None, way: str
) -> None:
    query, variables = WAYS[way]
    document, plain = parse(query), parse(PLAIN)
    selection = _study(document, variables)
    assert "description" in (study_paths(selection) or ())  # the projection reads it
    assert _cost(document, variables) == _cost(plain, {})  # the cost counts it
    assert Shape(selection.fields()).study == Shape(_study(plain, {}).fields()).study
    assert root_fields(document, None, variables) == ("query", ["ImagingStudy"])  # the audit
    body = await gql(query, **variables)  # the resolver reads it for the response
    assert "errors" not in body, body
    [value] = body["data"].values()
    assert set(value.values()) == {"sel", "Chest CT"}


@pytest.mark.parametrize("way", SKIPPED)
async def test_no_reader_sees_a_field_its_directive_leaves_out(
    gql: Gql, study: None, way: str
) -> None:
    query, variables = SKIPPED[way]
    document = parse(query)
    selection = _study(document, variables)
    assert "description" not in (study_paths(selection) or ())
    assert _cost(document, variables) == _cost(parse(PLAIN), {}) - 1
    assert [f.name for f in selection.fields()] == ["id"]
    assert (await gql(query, **variables)) == {"data": {"ImagingStudy": {"id": "sel"}}}


async def test_a_root_field_left_out_is_not_audited(caplog: pytest.LogCaptureFixture) -> None:
    document = parse(
        "query($a: Boolean = true) { ImagingStudyList(_count: 1) @skip(if: $a) { id } "
        '... @include(if: $a) { ImagingStudyHistory(id: "x") { id } } }'
    )
    assert root_fields(document) == ("query", ["ImagingStudyHistory"])
    assert root_fields(document, None, {"a": False}) == ("query", ["ImagingStudyList"])


async def test_fields_merged_under_one_key_are_all_read(gql: Gql, study: None) -> None:
    """graphql-core merges fields of one response key: the store reads what each selects."""
    body = await gql('{ ImagingStudy(id: "sel") { id } ImagingStudy(id: "sel") { status } }')
    assert body == {"data": {"ImagingStudy": {"id": "sel", "status": "available"}}}
    body = await gql(
        "{ ImagingStudyConnection { count } ImagingStudyConnection { edges { resource { id } } } }"
    )
    assert body == {
        "data": {"ImagingStudyConnection": {"count": 1, "edges": [{"resource": {"id": "sel"}}]}}
    }


async def test_the_audit_and_the_metrics_name_the_operation_that_ran(
    gql: Gql, study: None, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imaging.audit")
    query = (
        "query Read { ImagingStudyList(_count: 1) { id } } "
        'mutation Drop { ImagingStudyDelete(id: "sel") { id } }'
    )
    response = await http.post("/graphql", json={"query": query, "operationName": "Drop"})
    assert response.json() == {"data": {"ImagingStudyDelete": {"id": "sel"}}}
    [record] = [r.audit for r in caplog.records if r.name == "imaging.audit"]
    assert (record["category"], record["action"]) == ([{"text": "graphql mutation"}], "D")
    metrics = (await http.get("/metrics")).text
    assert 'imaging_requests_total{operation="ImagingStudyDelete",outcome="OK"} 1.0' in metrics


async def test_reshaping_reads_include_from_a_variable_default(gql: Gql, study: None) -> None:
    body = await gql(
        'query($y: Boolean = true) { ImagingStudy(id: "sel") { id '
        "series @include(if: $y) @flatten { uid } } }"
    )
    assert set(body["data"]["ImagingStudy"]) == {"id", "uid"}, body


def test_type_conditions_apply_as_the_executor_applies_them() -> None:
    """On the Resource union, a stored study takes the fragments on ImagingStudy and on the
    union, not those on OtherResource; without a known type every fragment counts."""
    document = parse(
        "fragment R on Resource { ... on ImagingStudy { id } ... on OtherResource { fhirJson } "
        "...S ... { __typename } } fragment S on ImagingStudy { description }"
    )
    walker = Walker.of_document(document, {}, None, schema._schema)
    fragment = walker.fragments["R"]
    on_study = Selection(walker, (fragment.selection_set,), "ImagingStudy")
    assert [(f.name, f.condition) for f in on_study.fields(typename=True)] == [
        ("id", "ImagingStudy"),
        ("description", "ImagingStudy"),
        ("__typename", None),
    ]
    anything = Selection(walker, (fragment.selection_set,))
    assert anything.names() == {"id", "fhirJson", "description"}


def test_arguments_and_directives_carry_their_values() -> None:
    document = parse(
        'query($c: Int = 5, $p: String) { ImagingStudyList(_count: $c, status: ["available"]) '
        '{ series(fhirpath: $p, modality: "CT") @slice(path: "$index") { uid } } }'
    )
    walker = Walker.of_document(document, {"p": "uid"}, operation_of(document))
    operation = operation_of(document)
    assert operation is not None
    [root] = walker.fields([operation.selection_set])
    assert root.arguments == {"_count": 5, "status": ["available"]}
    [series] = root.below().fields()
    assert series.arguments == {"fhirpath": "uid", "modality": "CT"}
    assert series.directives == {"slice": {"path": "$index"}}


def test_the_limits_fold_is_linear_in_the_document() -> None:
    """Forty fragments, each spreading the next twice, stand for 2**40 fields: each is folded
    once (its value reused), and collected once per selection, as the executor does."""
    levels = 40
    text = '{ ImagingStudy(id: "x") { ...F0 } } ' + " ".join(
        f"fragment F{n} on ImagingStudy {{ id ...F{n + 1} ...F{n + 1} }}" for n in range(levels)
    )
    document = parse(text + f" fragment F{levels} on ImagingStudy {{ id }}")
    walker = Walker.of_document(document)
    folded: list[str] = []

    def count(field: Field, context: None) -> int:
        folded.append(field.name)
        return 1 + fold(field.selection_set, context)

    fold: Fold[None, int] = Fold(walker, count, sum)
    operation = operation_of(document)
    assert operation is not None
    assert fold(operation.selection_set, None) == 2 ** (levels + 1)  # every spread counted
    assert len(folded) == levels + 2  # the root, and one `id` per fragment
    assert len(_study(document, {}).fields()) == levels + 1
    assert _cost(document, {}) == 2 ** (levels + 1)


def test_walking_and_measuring_a_document_leave_no_reference_cycle() -> None:
    """The walker and the limits hold the request's variables (a whole import Bundle): in a
    reference cycle they lived until the garbage collector's next pass, which then freed
    them all at once on the event loop, holding every other request."""
    document = parse(
        "query($n: Int) { ImagingStudyList(_count: $n) { ...A series { uid } } } "
        "fragment A on ImagingStudy { id ...B } fragment B on ImagingStudy { status }"
    )
    variables = {"n": 5}
    gc.collect()
    gc.disable()
    try:
        walker = Walker.of_document(document, variables)
        operation = operation_of(document)
        assert operation is not None
        assert [f.name for f in walker.fields([operation.selection_set])] == ["ImagingStudyList"]
        assert limit_errors(Limits(), document, variables) == []
        del walker
        assert gc.collect() == 0  # everything was freed when its last reference went
    finally:
        gc.enable()


def test_an_unknown_or_cyclic_fragment_ends_the_walk() -> None:
    document = parse(
        '{ ImagingStudy(id: "x") { ...A ...Missing } } '
        "fragment A on ImagingStudy { id ...B } fragment B on ImagingStudy { status ...A }"
    )
    assert [f.name for f in _study(document, {}).fields()] == ["id", "status"]
    assert _cost(document, {}) == 3
