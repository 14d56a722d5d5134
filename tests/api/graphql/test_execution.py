"""Differential test: the compiled execution path gives byte-identical responses to plain
graphql-core for the same schema, document, variables and data. Hypothesis writes queries
against the real schema (aliases, fragments, @include/@skip with variables, __typename, nested
paging arguments, valid or not) and studies of the real shape, now and then broken (nulls in
non-null positions, values of the wrong type, lists of nulls) to exercise errors, their paths
and null propagation."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
    get_named_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.graphql.context import Context
from api.graphql.schema import build_schema
from api.graphql.shared_plans import SharedPlans
from api.settings import Settings
from store.interop import demo
from tests.support.differential import COMPILED, REFERENCE, both, normalised

TYPES = COMPILED._schema.type_map


# -- queries -----------------------------------------------------------------------------------

# Values the field filters are drawn from: some match the generated studies, some do not.
FILTER_VALUES = {
    "String": ['"urn:dicom:uid"', '"http://e"', '"CT"', '"1.2.3"', '"no"'],
    "Int": ["1", "2"],
    "Boolean": ["true"],
}
FHIRPATHS = [
    '"number = 1"',
    '"exists()"',
    "\"code = 'CT'\"",
    "\"system.startsWith('urn')\"",
    '"url.exists() and value.empty()"',
    '"(("',
    '"uid.length() > 3"',
]


def _scalar(argument: Any) -> str:
    return get_named_type(argument.type).name


@st.composite
def arguments(draw: st.DrawFn, field: Any) -> str:
    """Arguments of a repeating element (any of them: every list of objects takes paging,
    `fhirpath` and field filters), valid or not."""
    if "_count" not in field.args or not draw(st.booleans()):
        return ""
    count = draw(st.sampled_from(["", "_count: 2", "_count: 0", "_count: $n"]))
    offset = draw(st.sampled_from(["", "", "_offset: 1", "_offset: -1"]))
    fhirpath = draw(st.sampled_from(["", "", *(f"fhirpath: {f}" for f in FHIRPATHS)]))
    filters = sorted(a for a in field.args if a not in ("_count", "_offset", "fhirpath"))
    chosen = draw(st.lists(st.sampled_from(filters), max_size=2, unique=True)) if filters else []
    filtered = [
        f"{name}: {draw(st.sampled_from(FILTER_VALUES[_scalar(field.args[name])]))}"
        for name in chosen
    ]
    inner = ", ".join(a for a in (count, offset, fhirpath, *filtered) if a)
    return f"({inner})" if inner else ""


@st.composite
def selection(
    draw: st.DrawFn, type_name: str, depth: int = 0, args: dict[str, str] | None = None
) -> str:
    type_ = TYPES[type_name]
    assert isinstance(type_, GraphQLObjectType)
    names = sorted(type_.fields)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=5))
    parts = []
    # One set of arguments per field of a type in the whole query, fragments and nested
    # repeats included: fields that merge (at any depth) must agree on their arguments.
    args = {} if args is None else args
    for name in sorted(set(chosen)):
        args.setdefault(f"{type_name}.{name}", draw(arguments(type_.fields[name])))
    for name in chosen:
        inner = get_named_type(type_.fields[name].type)
        # Aliases unique to their field, so repeats merge (same field, same arguments).
        alias = draw(st.sampled_from(["", "", f"{name}_1: ", f"{name}_2: "]))
        directive = draw(
            st.sampled_from(
                ["", "", " @include(if: $yes)", " @skip(if: $yes)", " @include(if: false)"]
            )
        )
        head = f"{alias}{name}{args[f'{type_name}.{name}']}{directive}"
        if isinstance(inner, GraphQLObjectType):
            if depth >= 3:
                continue
            head += f" {{ {draw(selection(inner.name, depth + 1, args))} }}"
        elif isinstance(inner, GraphQLUnionType):  # Reference.resource: what it resolved to
            head += " { __typename }"
        parts.append(head)
    if draw(st.booleans()):
        parts.append("__typename")
    if depth and draw(st.integers(0, 4)) == 0:
        parts.append(f"... on {type_name} {{ {draw(selection(type_name, depth + 1, args))} }}")
    return " ".join(parts) or "__typename"


def _declared(query: str) -> str:
    """The query with exactly the variables it uses declared (unused ones are invalid)."""
    used = [d for name, d in (("$yes", "$yes: Boolean!"), ("$n", "$n: Int")) if name in query]
    return f"query({', '.join(used)}) {query}" if used else f"query {query}"


@st.composite
def queries(draw: st.DrawFn) -> str:
    body = draw(selection("ImagingStudy"))
    if draw(st.booleans()):
        return _declared(
            f'{{ ImagingStudy(id: "x") {{ ...f }} }} fragment f on ImagingStudy {{ {body} }}'
        )
    root = draw(st.sampled_from(['ImagingStudy(id: "x")', "ImagingStudyList"]))
    return _declared(f"{{ {root} {{ {body} }} }}")


# -- documents ---------------------------------------------------------------------------------

MISSING = object()  # the element is left out altogether
ODD_VALUES = [
    MISSING,
    None,
    7,
    -1,
    2**40,
    "text",
    True,
    1.5,
    [],
    {},
    [None],
    ["a", None],
    {"code": 3},
]
BREAKABLE = [
    ("status",),
    ("subject", "reference"),
    ("series",),
    ("series", 0, "uid"),
    ("series", 0, "number"),
    ("series", 0, "modality"),
    ("series", 0, "instance"),
    ("series", 0, "instance", 0, "uid"),
    ("series", 0, "instance", 0, "sopClass"),
    ("series", 0, "instance", 0, "number"),
    ("identifier",),
    ("identifier", 0),
    ("meta", "versionId"),
    ("extension", 0, "url"),
    ("extension", 0, "valueDecimal"),
    ("numberOfSeries",),
    ("id",),
    ("_status",),
    ("_status", "extension"),
    ("meta", "profile"),
    ("meta", "_profile"),
    ("series", 0, "_uid"),
    # The column-wise plans of lists of leaf-only objects: an item, its leaves, a nested
    # object (required or not), an item of a list of nullable objects.
    ("series", 0, "instance", 0),
    ("series", 0, "instance", 1),
    ("series", 0, "instance", 1, "number"),
    ("series", 0, "instance", 1, "title"),
    ("series", 0, "instance", 1, "sopClass", "code"),
    ("series", 0, "endpoint", 0),
    ("series", 0, "endpoint", 0, "identifier"),
    ("series", 0, "endpoint", 0, "identifier", "value"),
    ("meta", "_profile", 1),
    ("meta", "_profile", 1, "id"),
]


def broken(study: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """`study` with the element at `path` replaced by `value` (when the path exists)."""
    study = copy.deepcopy(study)
    target: Any = study
    try:
        for step in path[:-1]:
            target = target[step]
        if value is MISSING:
            del target[path[-1]]
        else:
            target[path[-1]] = copy.deepcopy(value)
    except (KeyError, IndexError, TypeError):
        pass
    return study


@st.composite
def studies(draw: st.DrawFn) -> dict[str, Any]:
    study = demo.study("x", draw(st.integers(0, 2)), draw(st.integers(0, 3)))
    study["meta"] = {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"}
    study["extension"] = [
        {
            "url": "http://e",
            "valueDecimal": draw(st.sampled_from([1.5, 2, float("nan"), True, "x"])),
        }
    ]
    if draw(st.booleans()):  # ids and extensions of primitives (`_name`), a list aligned
        study["_status"] = {"id": "s", "extension": [{"url": "http://e", "valueCode": "x"}]}
        study["meta"].update(profile=["http://p", None], _profile=[None, {"id": "p"}])
        for series in study.get("series") or ():
            series["_uid"] = {"id": "u"}
    for _ in range(draw(st.integers(0, 3))):  # break something, somewhere
        study = broken(study, draw(st.sampled_from(BREAKABLE)), draw(st.sampled_from(ODD_VALUES)))
    return study


# -- the property ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=queries(),
    docs=st.lists(studies(), min_size=0, max_size=3),
    yes=st.booleans(),
    n=st.sampled_from([None, 1, 0, 5]),
)
@pytest.mark.slow
def test_compiled_results_equal_graphql_core(
    query: str, docs: list[dict[str, Any]], yes: bool, n: int | None
) -> None:
    result = asyncio.run(both(query, docs, yes, n))
    # Generated queries are valid: execution, not validation, is what is being compared.
    assert result.data is not None or any(e.path for e in result.errors or ()), result.errors


WIDE = """query($n: Int) { ROOT { __typename id status numberOfSeries subject { reference }
  meta { versionId profile _profile { id } } identifier { system value }
  extension { url value valueDecimal } _status { id extension { url valueCode } }
  series { uid _uid { id } number modality { coding { code } } instance(_count: $n) { uid
  number sopClass { code } } } } }"""


@pytest.mark.slow
def test_every_odd_value_in_every_position() -> None:
    """Each kind of wrong data in each position, under a query that selects them all."""
    base = demo.study("x", 2, 2)
    base["meta"] = {"versionId": "1"}
    base["extension"] = [{"url": "http://e", "valueDecimal": 1.5}]
    base["_status"] = {"id": "s", "extension": [{"url": "http://e", "valueCode": "x"}]}
    base["meta"].update(profile=["http://p", None], _profile=[None, {"id": "p"}])
    base["series"][0]["_uid"] = {"id": "u"}

    async def run() -> None:
        for path in BREAKABLE:
            for value in [*ODD_VALUES, float("nan"), False, 2**31, 3.0]:
                for root in ('ImagingStudy(id: "x")', "ImagingStudyList"):
                    await both(WIDE.replace("ROOT", root), [broken(base, path, value)], True, 2)

    asyncio.run(run())


def test_the_compiled_path_is_taken_for_plain_data() -> None:
    """Guards the property above from passing vacuously: valid data compiles, and a plan is
    only abandoned when the data is not what the schema says."""
    from api.graphql import execution

    taken: list[bool] = []
    original = execution.CompiledExecutionContext.complete_object_value

    def spy(self: Any, *args: Any) -> Any:
        result = original(self, *args)
        # (The cache holds (selection, plan) pairs: the plan is the second.)
        taken.append(any(plan is not None for _, plan in self._plans.values()))
        return result

    execution.CompiledExecutionContext.complete_object_value = spy  # type: ignore[method-assign]
    try:
        query = (
            '{ ImagingStudy(id: "x") { id series { uid instance(_count: 2) { uid '
            "sopClass { code } } } extension { url value valueDecimal } fhirJson } }"
        )
        asyncio.run(both(query, [demo.study("x", 2, 3)], True, 1))
    finally:
        execution.CompiledExecutionContext.complete_object_value = original  # type: ignore
    assert taken
    assert all(taken)


def test_list_and_scalar_types_in_the_schema_are_covered() -> None:
    kinds = {
        type(
            t.type
            if not isinstance(t.type, GraphQLNonNull | GraphQLList)
            else get_named_type(t.type)
        ).__name__
        for name, type_ in TYPES.items()
        if isinstance(type_, GraphQLObjectType) and not name.startswith("__")
        for t in type_.fields.values()
    }
    assert {GraphQLScalarType.__name__, GraphQLObjectType.__name__} <= kinds


def test_import_results_equal_graphql_core() -> None:
    """An import's results (one per entry, ids and outcomes null or not) are completed as a
    list by one plan: the same response as graphql-core's item by item."""
    from store.mongo import client
    from store.mongo.repository import Repository

    query = """mutation($b: JSON!) { ImagingStudyImport(resource: $b, dryRun: true) {
      index status id outcome } }"""
    fine = demo.study("imported", 1, 1)
    bad = {**demo.study("refused", 1, 1), "status": "done"}
    payload = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": fine}, {"resource": bad}, {"resource": 3}],
    }

    async def run() -> list[str]:
        _, db = client.open_embedded("import-differential")
        outputs = []
        for schema in (COMPILED, REFERENCE):
            context = Context(_repo=Repository(db), settings=Settings())
            outputs.append(
                normalised(await schema.execute(query, {"b": payload}, context_value=context))
            )
        return outputs

    compiled, reference = asyncio.run(run())
    assert compiled == reference
    assert json.loads(compiled)["data"]["ImagingStudyImport"][1]["id"] is None


def test_repeating_elements_compile_whatever_the_import_order() -> None:
    """The schema module loads the executor before the types register their list resolvers:
    a plan must still find them (it once fell back to graphql-core for every series)."""
    import subprocess
    import sys

    script = """
import asyncio
from api.graphql.schema import build_schema
from api.graphql import plans
from store.interop import demo
from api.graphql.context import Context
from api.settings import Settings
missing = []
original = plans.Codegen.field
def field(self, parent, details, source, var):
    found = original(self, parent, details, source, var)
    if found is None:
        missing.append(details[0].node.name.value)
    return found
plans.Codegen.field = field
class Repo:
    async def get(self, *_, **__): return demo.study("x", 2, 2)
schema = build_schema()
query = '{ ImagingStudy(id: "x") { series { uid instance(_count: 1) { uid } } } }'
result = asyncio.run(schema.execute(query, context_value=Context(_repo=Repo(),
                                                                  settings=Settings())))
assert result.errors is None, result.errors
print(missing)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_plan_is_found_only_for_the_selection_it_was_made_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plans are keyed by the id of graphql-core's selection list; an id is unique only while
    its object lives, so a plan must never be handed to another list that got the same id."""
    from api.graphql import execution, plans

    monkeypatch.setattr(plans.Codegen, "build", lambda self, type_, fields: fields[0])
    # (The plans shared across requests are keyed by the selection's nodes: tested apart.)
    monkeypatch.setattr(execution.SHARED, "plan", lambda executor, type_, fields, build: build())
    context = execution.CompiledExecutionContext.__new__(execution.CompiledExecutionContext)
    context.middleware_manager = None
    context._plans = {}
    study = COMPILED._schema.type_map["ImagingStudy"]
    first, second = ["first"], ["second"]
    assert context._plan(study, first) == "first"
    assert context._plan(study, first) == "first"  # made once, then found
    # As if `first` had been freed and `second` allocated where it was:
    context._plans[(study.name, id(second))] = context._plans.pop((study.name, id(first)))
    assert context._plan(study, second) == "second"


def test_imaging_compiled_0_switches_the_compiled_engine_off() -> None:
    from api.graphql import execution
    from api.settings import Settings

    assert build_schema(Settings()).execution_context_class is execution.CompiledExecutionContext
    plain = build_schema(Settings.from_env({"IMAGING_COMPILED": "0"}))
    assert plain.execution_context_class is not execution.CompiledExecutionContext


COLUMNS = """query($yes: Boolean!, $n: Int) { ROOT { meta { _profile { __typename id p: id } }
  series { endpoint { reference r: reference identifier { system value __typename } }
  instance { __typename uid n: number number @skip(if: $yes) title @include(if: $yes)
  sopClass { code system @include(if: $yes) __typename } } i2: instance(_count: $n) { uid
  sopClass { code } } } } }"""


def _column_study() -> dict[str, Any]:
    """A study whose lists of leaf-only objects have every case: nulls, missing elements, a
    nested object present in one item and absent in another."""
    base = demo.study("x", 2, 3)
    base["meta"] = {
        "versionId": "1",
        "profile": ["http://p", None],
        "_profile": [None, {"id": "p"}],
    }
    base["series"][0]["endpoint"] = [
        {"reference": "Endpoint/a", "identifier": {"system": "urn:x", "value": "a"}},
        {"reference": "Endpoint/b"},
    ]
    base["series"][0]["instance"][1]["title"] = "t"
    del base["series"][1]["instance"][0]["number"]
    return base


@pytest.mark.slow
def test_column_plans_equal_graphql_core_on_every_odd_value() -> None:
    """Lists of leaf-only objects are completed by one comprehension each: with nulls (as
    items, as values, as nested objects), aliases, __typename, elements missing in the data,
    @skip/@include, and every kind of wrong value in each of those positions, the response
    is graphql-core's."""
    base = _column_study()

    async def run() -> None:
        for path in BREAKABLE:
            for value in [*ODD_VALUES, float("nan"), False, 2**31, 3.0]:
                for root in ('ImagingStudy(id: "x")', "ImagingStudyList"):
                    for yes in (True, False):
                        query = COLUMNS.replace("ROOT", root)
                        await both(query, [broken(base, path, value)], yes, 2)

    asyncio.run(run())


def test_the_column_plans_are_taken_for_lists_of_leaf_only_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the test above from passing vacuously: each list of leaf-only objects of its
    query gets a comprehension, and on valid data no plan falls back."""
    from api.graphql import execution, plans

    columns: list[str] = []
    original = plans.Codegen.columns

    def spy(self: Any, item_type: Any, items: str, details: Any) -> str | None:
        found = original(self, item_type, items, details)
        if found is not None:
            columns.append(get_named_type(item_type).name)
        return found

    fallbacks: list[bool] = []
    run = execution._collector_paused

    def paused(plan: Any) -> Any:
        try:
            return run(plan)
        except plans.Fallback:
            fallbacks.append(True)
            raise

    monkeypatch.setattr(plans.Codegen, "columns", spy)
    monkeypatch.setattr(execution, "_collector_paused", paused)
    monkeypatch.setattr(execution, "SHARED", SharedPlans())  # none made by earlier tests
    for yes in (True, False):
        asyncio.run(
            both(COLUMNS.replace("ROOT", 'ImagingStudy(id: "x")'), [_column_study()], yes, 2)
        )
    assert sorted(set(columns)) == [
        "ElementBase",
        "ImagingStudySeriesInstance",
        "Reference",
    ]
    assert not fallbacks


def test_the_engine_overrides_and_calls_only_the_graphql_core_methods_it_declares() -> None:
    """graphql-core marks its completion methods private: the engine's use of them is the
    list in GRAPHQL_CORE_PRIVATE, each still there with the parameters the engine expects,
    and no other graphql-core method is overridden but the public `build` and
    `execute_operation`; the attributes the latter reads and sets after the operation are
    still the executor's."""
    import inspect

    from graphql import Executor

    from api.graphql import execution

    engine = execution.CompiledExecutionContext
    overridden = {
        name for name in vars(engine) if hasattr(Executor, name) and not name.startswith("__")
    }
    assert overridden <= {"build", "execute_operation", *execution.GRAPHQL_CORE_PRIVATE}
    declared = inspect.get_annotations(Executor)
    for attribute in ("async_helpers", "background_futures", "pending_incremental_futures"):
        assert attribute in declared, attribute
    for name in execution.GRAPHQL_CORE_PRIVATE:
        theirs = list(inspect.signature(getattr(Executor, name)).parameters)
        if name in vars(engine):
            ours = list(inspect.signature(getattr(engine, name)).parameters)
            assert ours == theirs, name
        else:
            assert theirs == ["self", "return_type", "field_details_list"], name


def test_plans_are_shared_by_requests_selecting_the_same_with_the_same_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plan is made once for every request whose selection and variables used inside it
    are the same: a variable used only above it (the root's `_count`) changes nothing, one
    used inside it (@include) makes another plan, and each gives graphql-core's response."""
    from api.graphql import execution, plans

    made: list[str] = []
    original = plans.Codegen.build

    def build(self: Any, type_: Any, fields: Any) -> Any:
        made.append(type_.name)
        return original(self, type_, fields)

    monkeypatch.setattr(plans.Codegen, "build", build)
    monkeypatch.setattr(execution, "SHARED", SharedPlans())
    query = """query($yes: Boolean!, $n: Int) { ImagingStudyList(_count: $n) { id
      series { uid number @include(if: $yes) } } }"""
    docs = [demo.study("x", 2, 1), demo.study("y", 1, 1)]

    def run(yes: bool, n: int) -> int:
        result = asyncio.run(both(query, docs, yes, n))
        assert result.errors is None
        return len(made)

    first = run(True, 2)
    assert first >= 1
    assert run(True, 1) == first  # another value above the plan
    assert run(False, 2) > first  # another value inside it
    assert run(True, 2) == run(False, 2)  # both are kept


def test_a_shared_plan_is_never_found_for_other_nodes_with_the_same_ids() -> None:
    """Shared plans are keyed by the ids of the selection's nodes: an entry holds its nodes,
    and a lookup whose nodes are other objects (as if the first had been freed and their ids
    reused) makes its own plan."""
    from types import SimpleNamespace

    from graphql import parse

    shared = SharedPlans()
    schema = COMPILED._schema
    study = schema.type_map["ImagingStudy"]

    def executor_for(text: str) -> tuple[Any, Any]:
        document = parse(text)
        field = document.definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]
        details = [SimpleNamespace(node=field, fragment_variable_values=None, defer_usage=None)]
        variables = SimpleNamespace(sources={}, coerced={})
        executor = SimpleNamespace(
            schema=schema,
            operation=document.definitions[0],
            variable_values=variables,
            fragment_definitions={},
        )
        return executor, details

    executor, details = executor_for("{ ImagingStudy(id: 1) { id } }")
    assert shared.plan(executor, study, details, lambda: "first") == "first"  # type: ignore
    assert shared.plan(executor, study, details, lambda: "again") == "first"  # type: ignore
    other, other_details = executor_for("{ ImagingStudy(id: 1) { status } }")
    # As if the first nodes were freed and the new ones allocated where they were:
    ((key, entry),) = shared._plans.items()
    nodes = tuple(map(id, (d.node for d in other_details)))
    moved = (id(schema), id(other.operation), id(study), nodes, key[4])
    shared._plans[moved] = entry
    assert shared.plan(other, study, other_details, lambda: "second") == "second"  # type: ignore
