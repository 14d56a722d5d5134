"""The embedded store (mongomock behind store/mongo/client.py) works in a thread of its own, so a
large document's copy does not hold the event loop."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from store.interop import demo
from store.mongo import client
from store.mongo.repository import Repository
from tests.support.loop import LoopTicks


@pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")),
    reason="checks the embedded store; with MONGODB_URI the tests use motor",
)
async def test_the_embedded_store_works_off_the_event_loop(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    run = client._run

    def slow(*args: Any) -> Any:  # every store call, made slow as a large document's copy
        before = ticks.count
        time.sleep(0.02)  # the loop goes on meanwhile, unless the call holds it
        seen.append((before, ticks.count))
        return run(*args)

    monkeypatch.setattr(client, "_run", slow)
    async with LoopTicks() as ticks:
        await store.create(demo.study("slow", 1, 1))
    assert seen
    assert all(after > before for before, after in seen)


EMBEDDED_ONLY = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")),
    reason="checks the embedded store's thread; with MONGODB_URI the tests use motor",
)
VERSION = {"_id": 0, "meta.versionId": 1}


def _thread_jobs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The jobs given to the embedded store's thread from now on."""
    jobs: list[Any] = []
    finishing = client._finishing

    def recorded(job: Any, into: list[Any]) -> None:
        jobs.append(job)
        finishing(job, into)

    monkeypatch.setattr(client, "_finishing", recorded)
    return jobs


@EMBEDDED_ONLY
async def test_a_read_of_a_few_values_is_made_at_once_when_the_thread_is_idle(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create(demo.study("few", 2, 3))
    studies = store._studies
    jobs = _thread_jobs(monkeypatch)
    probe = await studies.find_one({"_id": "few"}, VERSION)
    assert probe == {"meta": {"versionId": "1"}}
    assert jobs == []  # no round trip to the thread for one value
    # Lists (a study's series) and whole documents are the thread's, however idle it is.
    series = await studies.find_one({"_id": "few"}, {"series.uid": 1})
    whole = await studies.find_one({"_id": "few"})
    assert len(series["series"]) == 2
    assert len(whole["series"]) == 2
    assert len(jobs) == 2
    assert client._QUEUED[0] == 0


@EMBEDDED_ONLY
async def test_a_read_given_after_a_write_sees_it_though_the_write_is_still_running(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read made at once must not overtake a write already given to the thread: it would
    answer the version before a write that was asked for first."""
    await store.create(demo.study("order", 1, 1))
    studies = store._studies
    run = client._run

    def slow(*args: Any) -> Any:
        time.sleep(0.05)  # the write is still in the thread when the read is asked for
        return run(*args)

    monkeypatch.setattr(client, "_run", slow)
    write = asyncio.ensure_future(
        studies.update_one({"_id": "order"}, {"$set": {"meta.versionId": "2"}})
    )
    await asyncio.sleep(0)  # the write is given to the thread
    assert client._QUEUED[0] == 1
    probe = await studies.find_one({"_id": "order"}, VERSION)
    assert probe == {"meta": {"versionId": "2"}}
    await write
    assert client._QUEUED[0] == 0


@EMBEDDED_ONLY
async def test_the_count_of_thread_jobs_comes_back_when_a_job_fails(store: Repository) -> None:
    await store.create(demo.study("twice", 1, 1))
    with pytest.raises(client.DuplicateKey):
        await store._studies.insert_one({"_id": "twice"})
    assert client._QUEUED[0] == 0
    # ...so reads of a few values are made at once again, and see the store as it is.
    assert await store._studies.find_one({"_id": "twice"}, VERSION) == {"meta": {"versionId": "1"}}
