"""What `ImagingStudy(id:)` derives from its selection (the elements the store reads, the page
of instances it may send, the result budget's shape) is made once per selection and variables
used inside it (api/graphql/resolvers/queries.py, the key of api/graphql/shared_plans.py), and
is always what that request's own selection gives."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from api.graphql.context import Context
from api.graphql.resolvers import queries
from api.graphql.schema import build_schema
from api.graphql.shared_plans import SharedPlans
from api.settings import Settings
from store.interop import demo

SCHEMA = build_schema(Settings())


class _Spy:
    """A store that records what each read asked for."""

    def __init__(self) -> None:
        self.reads: list[tuple[set[str] | None, Any]] = []

    async def get(
        self, study_id: str, fields: Any = None, subject: Any = None, instances: Any = None
    ) -> Any:
        self.reads.append((fields, instances))
        return copy.deepcopy(STUDY) | {"id": study_id}


STUDY = demo.study("x", 2, 4)


def _run(query: str, variables: dict[str, Any], settings: Settings | None = None) -> Any:
    spy = _Spy()
    context = Context(_repo=spy, settings=settings or Settings())  # type: ignore[arg-type]
    schema = SCHEMA if settings is None else build_schema(settings)
    result = asyncio.run(schema.execute(query, variables, context_value=context))
    return result, spy.reads[-1] if spy.reads else None


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The selections derived anew (by the fields they read), none kept from other tests."""
    calls: list[str] = []
    original = queries._one_study

    def one_study(info: Any) -> Any:
        derived = original(info)
        calls.append(",".join(sorted(derived[0] or ())))
        return derived

    monkeypatch.setattr(queries, "_one_study", one_study)
    monkeypatch.setattr(queries, "_SELECTIONS", SharedPlans())
    return calls


def test_another_study_reuses_what_the_selection_derived(made: list[str]) -> None:
    query = "query($id: ID!) { ImagingStudy(id: $id) { id status series { uid } } }"
    first, read = _run(query, {"id": "a"})
    second, again = _run(query, {"id": "b"})
    assert first.data["ImagingStudy"]["id"] == "a"
    assert second.data["ImagingStudy"]["id"] == "b"
    assert len(made) == 1
    assert read == again
    assert read[0] is not again[0]  # each read gets its own set of fields


def test_a_variable_used_inside_the_selection_derives_it_again(made: list[str]) -> None:
    """@include and a page's _count change what is read: each value is its own entry."""
    query = """query($yes: Boolean!, $n: Int) { ImagingStudy(id: "x") { id
      status @include(if: $yes) series { uid instance(_count: $n) { uid } } } }"""
    (_, with_status), (_, without), (_, page_of_3) = (
        _run(query, {"yes": True, "n": 2}),
        _run(query, {"yes": False, "n": 2}),
        _run(query, {"yes": True, "n": 3}),
    )
    assert "status" in with_status[0]
    assert "status" not in without[0]
    assert (with_status[1], without[1], page_of_3[1]) == ((0, 2), (0, 2), (0, 3))
    assert _run(query, {"yes": True, "n": 2})[1] == with_status
    assert len(made) == 3


def test_a_directive_on_the_field_reads_every_instance(made: list[str]) -> None:
    """A directive on ImagingStudy itself keeps the instance window off, kept or not."""
    query = """query($yes: Boolean!) { ImagingStudy(id: "x") @include(if: $yes) {
      series { instance(_count: 2) { uid } } } }"""
    assert _run(query, {"yes": True})[1][1] is None
    assert _run(query, {"yes": True})[1][1] is None
    plain = '{ ImagingStudy(id: "x") { series { instance(_count: 2) { uid } } } }'
    assert _run(plain, {})[1][1] == (0, 2)


def test_the_budget_refuses_every_request_with_a_kept_shape(made: list[str]) -> None:
    query = "query($id: ID!) { ImagingStudy(id: $id) { series { instance { uid } } } }"
    settings = Settings(max_result_values=5)
    for study_id in ("a", "b"):
        result, _ = _run(query, {"id": study_id}, settings)
        assert result.data == {"ImagingStudy": None}
        assert [e.extensions["code"] for e in result.errors] == ["QUERY_REJECTED"]
