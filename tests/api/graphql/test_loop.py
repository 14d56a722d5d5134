"""Very large writes keep the event loop serving other requests: write inputs reach the store as
FHIR JSON without an object per value, and mutations coerce their variables in a worker thread.
(How long the loop is held is measured by `make bench`, row L; these tests check the means.)"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
from graphql.execution import executor
from strawberry.types.base import has_object_definition

from api.graphql import inputs
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql

ADD_SERIES = """mutation($id: ID!, $s: [ImagingStudySeriesInput!]!) {
  ImagingStudyAddSeries(id: $id, series: $s) { numberOfSeries } }"""
ADD = """mutation($id: ID!, $u: String!, $i: [ImagingStudySeriesInstanceInput!]!) {
  ImagingStudyAddInstances(id: $id, seriesUid: $u, instances: $i) { numberOfInstances } }"""
READ = "query($id: ID!) { ImagingStudy(id: $id) { id } }"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the input types of which an object gets built."""
    made: list[str] = []
    for name, cls in vars(inputs).items():
        if not (
            isinstance(cls, type)
            and has_object_definition(cls)
            and cls.__strawberry_definition__.is_input
        ):
            continue
        original = cls.__init__

        def init(
            self: Any, *args: Any, _name: str = name, _init: Any = original, **kwargs: Any
        ) -> None:
            made.append(_name)
            _init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)
    return made


async def test_write_inputs_reach_the_store_as_fhir_json_without_input_objects(
    gql: Gql, store: Repository, built: list[str]
) -> None:
    study = demo.study("json", 1, 2)
    instance = study["series"][0]["instance"][0]
    instance["title"] = None  # explicit nulls leave FHIR JSON, as omitted fields do
    instance["sopClass"]["display"] = None
    assert "errors" not in await gql(CREATE, res=study)
    series = {**demo.series("json", 2, 1), "description": None}
    assert "errors" not in await gql(ADD_SERIES, id="json", s=[series])
    more = [demo.instance("json", 1, 3)]
    added = await gql(ADD, id="json", u=demo.uid("json", 1), i=more)
    assert added["data"]["ImagingStudyAddInstances"]["numberOfInstances"] == 4
    assert built == []
    stored = await store.get("json")
    assert stored is not None
    first, second = stored["series"]
    assert first["instance"][0] == demo.instance("json", 1, 1)
    assert first["instance"][2] == demo.instance("json", 1, 3)
    assert "description" not in second
    assert second["instance"] == demo.series("json", 2, 1)["instance"]


async def test_mutations_coerce_their_variables_off_the_event_loop(
    gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    coerce = executor.get_variable_values

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return coerce(*args, **kwargs)

    monkeypatch.setattr(executor, "get_variable_values", spy)
    assert "errors" not in await gql(CREATE, res=demo.study("off", 1, 1))
    assert "errors" not in await gql(READ, id="off")
    loop = threading.get_ident()
    # The write's in a worker thread; a query's (small) on the loop, saving the thread hop.
    assert len(threads) == 2
    assert threads[0] != loop
    assert threads[1] == loop


@pytest.mark.parametrize("write", [False, True], ids=["query", "mutation"])
async def test_a_finished_operation_is_freed_without_the_cyclic_collector(
    gql: Gql, write: bool
) -> None:
    """graphql-core's executor referred to itself (through its async helpers), so every
    operation's variables, context and results lived until the cyclic collector's next pass,
    which for a large import then freed them all at once on the event loop. Once an
    operation has answered, nothing of its executor is left to collect."""
    assert "errors" not in await gql(CREATE, res=demo.study("gc", 1, 2))
    query = ADD_SERIES if write else READ
    variables: dict[str, Any] = {"id": "gc"}
    if write:
        variables["s"] = [demo.series("gc", 2, 1)]
    await gql(query, **variables)  # plans, documents and caches made before counting
    if write:
        variables["s"] = [demo.series("gc", 3, 1)]
    gc.collect()
    gc.disable()
    try:
        answer = await gql(query, **variables)
        left = [o for o in gc.get_objects() if isinstance(o, executor.Executor)]
    finally:
        gc.enable()
    assert "errors" not in answer, answer
    assert left == []
