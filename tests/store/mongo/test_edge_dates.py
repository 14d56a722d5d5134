"""Dates at the edges of the calendar: a range that runs past the end of year 9999 is cut
there and works in writes and searches; a value whose first instant lies outside what the
server stores (year 0 in UTC, or past 9999) is refused as BAD_USER_INPUT naming the element."""

from __future__ import annotations

import pytest

from store.fhir.outcome import BAD_USER_INPUT, StoreError
from store.interop import demo
from store.mongo.repository import Repository

KEPT = [
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.998Z",
    "9999-12-31",
    "9999-12",
    "9999",
    "0001-01-01T00:00:00Z",
    "0001-01-01T01:00:00+01:00",
    "0001",
]
REFUSED = [
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:59:59.999+01:00",
    "9999-12-31T23:30:00-01:00",
    "9999-12-31T23:59:59.999Z",
    "0000",
]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@pytest.mark.parametrize("value", KEPT)
async def test_edge_dates_work_in_writes_and_searches(store: Repository, value: str) -> None:
    await store.create(demo.study("edge", 1, 1, started=value))
    series = demo.study("edge", 1, 1)["series"]
    await store.update(
        "edge",
        {**demo.study("edge", 1, 1, started=value), "series": [{**series[0], "started": value}]},
        None,
    )
    assert [s["id"] for s in await store.search([("started", value)], 10)] == ["edge"]
    for prefix in PREFIXES:  # every comparison runs (whether or not it matches)
        await store.search([("started", prefix + value)], 10, sort="-started")


@pytest.mark.parametrize("value", REFUSED)
async def test_dates_outside_the_stored_instants_are_refused(store: Repository, value: str) -> None:
    with pytest.raises(StoreError) as caught:
        await store.create(demo.study("edge", 1, 1, started=value))
    assert caught.value.code == BAD_USER_INPUT
    assert [i.expression for i in caught.value.issues] == ["ImagingStudy.started"]
    for prefix in PREFIXES:
        with pytest.raises(StoreError) as caught:
            await store.search([("started", prefix + value)], 10)
        assert caught.value.code == BAD_USER_INPUT
        assert caught.value.issues[0].expression == "started"


async def test_approximate_searches_near_the_edges_stay_in_range(store: Repository) -> None:
    await store.create(demo.study("late", 1, 1, started="9999-06"))
    await store.create(demo.study("early", 1, 1, started="0001-06"))
    assert [s["id"] for s in await store.search([("started", "ap9999")], 10)] == ["late"]
    assert [s["id"] for s in await store.search([("started", "ap0001")], 10)] == ["early"]
