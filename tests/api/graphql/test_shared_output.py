"""Output objects shared within one response (api/graphql/plans.py): in a list completed
column-wise, a nested object whose selected fields are all exactly checked leaves (an
instance's `sopClass`) is built once per distinct set of values and shared by the items with
those values. The response must stay graphql-core's, whatever the values, and nothing that
handles a response afterwards (reshaping directives, the result budget, subscriptions) may
change such an object in place."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest

from api.graphql import execution, plans
from api.graphql.context import Context
from api.graphql.schema import build_schema
from api.graphql.shared_plans import SharedPlans
from api.settings import Settings
from store.interop import demo
from store.mongo.events import Bus, Change
from tests.support.differential import COMPILED, REFERENCE, both

CT = "urn:oid:1.2.840.10008.5.1.4.1.1.2"
MR = "urn:oid:1.2.840.10008.5.1.4.1.1.4"
QUERY = """query($yes: Boolean!, $n: Int) { ImagingStudy(id: "x") { series { uid
  instance(_count: $n) { uid sopClass { system code } c: sopClass { code userSelected }
  t: sopClass { __typename code @include(if: $yes) } } } } }"""


def _study(codes: list[Any], **extra: Any) -> dict[str, Any]:
    """One series whose instances have these SOP class codes, each its own dict (as the store
    hands them out), with `extra` elements in every sopClass."""
    study = demo.study("x", 1, len(codes))
    for instance, code in zip(study["series"][0]["instance"], codes, strict=True):
        instance["sopClass"] = {"system": "urn:ietf:rfc:3986", "code": code, **extra}
    return study


def _instances(result: Any) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = result.data["ImagingStudy"]["series"][0]["instance"]
    return instances


def test_items_with_equal_nested_values_share_one_object_per_selection() -> None:
    """Equal values give one object (of each selection), other values their own, and the
    response is graphql-core's."""
    for yes in (True, False):
        result = asyncio.run(both(QUERY, [_study([CT, CT, MR, CT, None])], yes, None))
        items = _instances(result)
        assert items[0]["sopClass"] is items[1]["sopClass"] is items[3]["sopClass"]
        assert items[0]["sopClass"] is not items[2]["sopClass"]
        assert items[0]["sopClass"] is not items[4]["sopClass"]
        assert items[4]["sopClass"] == {"system": "urn:ietf:rfc:3986", "code": None}
        # Each alias is its own selection: never the object of another.
        assert items[0]["c"] is items[1]["c"]
        assert items[0]["c"] is not items[0]["sopClass"]
        assert items[0]["t"] is items[1]["t"]
        assert items[0]["t"] is not items[0]["c"]


@pytest.mark.parametrize(
    "odd",
    [1, True, 1.0, ["urn:x"], {"code": "x"}, "", None],
    ids=["int", "bool", "float", "list", "dict", "empty", "null"],
)
def test_a_shared_position_with_an_odd_value_is_graphql_cores(odd: Any) -> None:
    """A value of the wrong type among equal ones (equal as Python compares them, like 1
    and True, or unhashable) is refused before it is looked up: graphql-core completes the
    list, with its errors."""
    for codes in ([CT, odd, CT], [odd, CT, odd]):
        asyncio.run(both(QUERY, [_study(codes)], True, None))
    for selected in (True, 1, 1.0, "true", None):  # Coding.userSelected is a Boolean
        asyncio.run(both(QUERY, [_study([CT, CT], userSelected=selected)], True, None))
    mixed = _study([CT, CT])
    mixed["series"][0]["instance"][1]["sopClass"]["userSelected"] = 1
    mixed["series"][0]["instance"][0]["sopClass"]["userSelected"] = True
    asyncio.run(both(QUERY, [mixed], True, None))


def test_past_the_cap_objects_are_built_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct values than a site shares are built per item: same response."""
    monkeypatch.setattr(plans, "_SHARED_CAP", 3)
    monkeypatch.setattr(execution, "SHARED", SharedPlans())  # none made with another cap
    codes = [f"urn:oid:1.2.{n % 5}" for n in range(12)]
    items = _instances(asyncio.run(both(QUERY, [_study(codes)], True, None)))
    assert items[0]["sopClass"] is items[5]["sopClass"]  # shared while under the cap
    assert items[4]["sopClass"] == items[9]["sopClass"]
    assert items[4]["sopClass"] is not items[9]["sopClass"]  # past it: one each


RESHAPED = [
    """{ ImagingStudy(id: "x") { series { instance { uid sopClass @flatten { code } } } } }""",
    """{ ImagingStudy(id: "x") { series { instance @flatten { uid sopClass { code } } } } }""",
    """{ ImagingStudy(id: "x") { series @flatten { instance @first { sopClass { code } } } } }""",
    """{ ImagingStudy(id: "x") { series { instance @slice(path: "$index") { sopClass
      { code } } } } }""",
    """{ ImagingStudy(id: "x") { series { instance @flatten { sopClass @flatten
      { code @singleton } } } } }""",
]


@pytest.mark.parametrize("query", RESHAPED)
def test_reshaping_directives_read_shared_objects_without_changing_them(
    query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directives rebuild the response from the executed data: with shared objects in
    it, the reshaped response is graphql-core's (errors included), and running the same
    query again over the same data gives the same response."""
    sharing: list[str] = []
    original = plans.Codegen.shared

    def shared(self: Any, expression: str, keys: list[str]) -> str:
        sharing.append(expression)
        return original(self, expression, keys)

    monkeypatch.setattr(plans.Codegen, "shared", shared)
    monkeypatch.setattr(execution, "SHARED", SharedPlans())
    study = _study([CT, CT, MR])
    first = asyncio.run(both(query, [study], True, None))
    again = asyncio.run(both(query, [study], True, None))
    assert orjson.dumps(first.data) == orjson.dumps(again.data)
    assert sharing  # the executed data held shared objects


def test_the_result_budget_counts_the_same_with_shared_objects() -> None:
    """The budget charges the studies read, before their completion: a response that shares
    objects is refused, or not, exactly as graphql-core's."""
    study = _study([CT] * 40)
    query = '{ ImagingStudy(id: "x") { series { instance { uid sopClass { code } } } } }'

    async def run(limit: int) -> list[bytes]:
        outputs = []
        settings = Settings(max_result_values=limit)
        for compiled in (True, False):
            schema = build_schema(settings, compiled=compiled)
            context = Context(_repo=_One(study), settings=settings)  # type: ignore[arg-type]
            result = await schema.execute(query, context_value=context)
            codes = [(e.extensions or {}).get("code") for e in result.errors or ()]
            outputs.append(orjson.dumps({"data": result.data, "codes": codes}))
        return outputs

    refused, served = asyncio.run(run(50)), asyncio.run(run(10_000))
    assert refused[0] == refused[1]
    assert b"QUERY_REJECTED" in refused[0]
    assert served[0] == served[1]
    assert served[0].count(CT.encode()) == 40


class _One:
    """A store that reads one study, a fresh copy each time (as the store hands them out)."""

    def __init__(self, study: dict[str, Any]) -> None:
        self.study = study

    async def get(self, *_: Any, **__: Any) -> Any:
        return copy.deepcopy(self.study)


SUBSCRIBE = """subscription { ImagingStudyChanged { action resource { id series { uid
  instance { uid sopClass { system code } } } } } }"""


def test_a_subscription_event_with_shared_objects_encodes_as_graphql_cores() -> None:
    """An event's resource completes through the same plans: its payload, which the
    WebSocket encodes once for every subscriber of the operation, is graphql-core's, and
    encoding it again (another subscriber) gives the same bytes."""

    async def first_event(schema: Any) -> bytes:
        bus = Bus()
        context = Context(_repo=_One({}), settings=Settings(), events=bus)  # type: ignore
        events = await schema.subscribe(SUBSCRIBE, context_value=context)
        pending = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.05)  # the resolver subscribes to the bus
        study = _study([CT, CT, MR])
        bus.publish(Change("create", "x", "1", "available", study, "Patient/p"))
        result = await asyncio.wait_for(pending, 5)
        await events.aclose()
        assert not result.errors, result.errors
        instances = result.data["ImagingStudyChanged"]["resource"]["series"][0]["instance"]
        encoded = orjson.dumps(result.data)
        assert orjson.dumps(result.data) == encoded  # a second encoding: nothing changed
        if schema is COMPILED:
            assert instances[0]["sopClass"] is instances[1]["sopClass"]
        return encoded

    assert asyncio.run(first_event(COMPILED)) == asyncio.run(first_event(REFERENCE))


def test_an_item_whose_nested_object_equals_the_previous_ones_reuses_its_output() -> None:
    """Consecutive equal nested dicts (other objects, as the store hands them out) give one
    output object without being read again; a difference anywhere in the dict (even in an
    element not selected) reads it again, and values alternating keep their objects."""
    study = _study([CT, CT, MR, CT, MR])
    instances = study["series"][0]["instance"]
    instances[1]["sopClass"]["display"] = "CT Image Storage"  # not selected by `c`
    query = '{ ImagingStudy(id: "x") { series { instance { c: sopClass { code } } } } }'
    items = _instances(asyncio.run(both(query, [study], True, None)))
    assert items[0]["c"] is items[1]["c"] is items[3]["c"]
    assert items[2]["c"] is items[4]["c"]
    assert items[0]["c"] == {"code": CT}


def test_a_comparison_too_deep_gives_the_list_to_graphql_core() -> None:
    """Comparing with the previous item recurses into elements nobody selected: too deep,
    graphql-core completes the object (and has nothing to compare)."""
    study = _study([CT, CT])
    for instance in study["series"][0]["instance"]:  # equal, but each its own objects
        deep: dict[str, Any] = {}
        for _ in range(5_000):
            deep = {"extension": [deep]}
        instance["sopClass"]["extension"] = [deep]
    query = '{ ImagingStudy(id: "x") { series { instance { sopClass { code } } } } }'

    async def run(schema: Any) -> bytes:
        context = Context(_repo=_Same(study), settings=Settings())  # type: ignore[arg-type]
        result = await schema.execute(query, context_value=context)
        return orjson.dumps({"data": result.data, "errors": bool(result.errors)})

    assert asyncio.run(run(COMPILED)) == asyncio.run(run(REFERENCE))


class _Same:
    """A store that hands out the one study it holds (too deep to copy)."""

    def __init__(self, study: dict[str, Any]) -> None:
        self.study = study

    async def get(self, *_: Any, **__: Any) -> Any:
        return self.study
