"""`ImagingStudy(id) { series { instance(_offset:, _count:) } }` asks the store for that page
only (api/graphql/projection.py `instance_window`; on MongoDB the server sends only the page),
and answers exactly what paging the whole list answers; any selection that could read other
instances reads them all, as before."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import Gql

PAGED = """query($o: Int, $c: Int) { ImagingStudy(id: "ip") { id series { uid numberOfInstances
  instance(_offset: $o, _count: $c) { uid number } } } }"""
WHOLE = '{ ImagingStudy(id: "ip") { series { uid instance { uid number } } } }'


@pytest.fixture
def settings() -> Settings:
    # fhirJson is priced as the largest study: room for it beside a page.
    return Settings(seed=False, allowed_hosts=("test",), max_cost=10**9)


@pytest.fixture
async def windows(store: Repository, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    resource = demo.study("ip", 3, 12)
    del resource["series"][1]["instance"]
    await store.create(resource)
    asked: list[Any] = []
    real = store.get

    async def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("instances"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "get", spy)
    return asked


@pytest.mark.parametrize(("offset", "count"), [(0, 5), (4, 3), (10, 5), (12, 1), (3, None)])
async def test_a_page_of_instances_is_read_as_a_page(
    gql: Gql, windows: list[Any], offset: int, count: int | None
) -> None:
    whole = (await gql(WHOLE))["data"]["ImagingStudy"]["series"]
    body = await gql(PAGED, o=offset, c=count)
    assert "errors" not in body, body
    series = body["data"]["ImagingStudy"]["series"]
    end = None if count is None else offset + count
    assert [s["uid"] for s in series] == [s["uid"] for s in whole]
    assert [s["instance"] for s in series] == [
        None if s["instance"] is None else s["instance"][offset:end] or [] for s in whole
    ]
    assert windows == [None, (offset, count)]


async def test_literal_arguments_give_the_page_too(gql: Gql, windows: list[Any]) -> None:
    body = await gql(
        '{ ImagingStudy(id: "ip") { series { instance(_offset: 2, _count: 2) { uid } } } }'
    )
    assert [len(s["instance"] or ()) for s in body["data"]["ImagingStudy"]["series"]] == [2, 0, 2]
    assert windows == [(2, 2)]


@pytest.mark.parametrize(
    "query",
    [
        # Two pages of the same list (aliases), or the list also read whole.
        '{ ImagingStudy(id: "ip") { series { a: instance(_count: 1) { uid } '
        "b: instance(_offset: 5) { uid } } } }",
        # A filter or a FHIRPath reads every instance before the page.
        '{ ImagingStudy(id: "ip") { series { instance(number: 3, _count: 1) { uid } } } }',
        '{ ImagingStudy(id: "ip") { series(_count: 3) { instance(fhirpath: "number > 3", '
        "_count: 1) { uid } } } }",
        '{ ImagingStudy(id: "ip") { series(fhirpath: "instance.count() > 3", _count: 3) '
        "{ instance(_count: 1) { uid } } } }",
        # The whole study as JSON.
        '{ ImagingStudy(id: "ip") { fhirJson series { instance(_count: 1) { uid } } } }',
        # No paging at all.
        WHOLE,
    ],
)
async def test_what_may_read_other_instances_reads_them_all(
    gql: Gql, windows: list[Any], query: str
) -> None:
    body = await gql(query)
    assert "errors" not in body, body
    assert windows == [None]


async def test_an_offset_past_the_end_makes_no_positions(gql: Gql, windows: list[Any]) -> None:
    """An offset at or past every series' end answers empty pages without making a position
    per skipped instance: a small request cannot make the server build a list as long as the
    offset it sends (the largest Int would be 16 GiB of positions)."""
    tracemalloc.start()
    try:
        body = await gql(PAGED, o=20_000_000, c=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "errors" not in body, body
    assert [s["instance"] for s in body["data"]["ImagingStudy"]["series"]] == [[], None, []]
    assert windows == [(20_000_000, 10)]
    assert peak < 50 * 2**20  # 20 million positions alone would be 160 MB
