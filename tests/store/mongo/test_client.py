"""The embedded store (mongomock behind store/mongo/client.py) works in a thread of its own, so a
large document's copy does not hold the event loop."""

from __future__ import annotations

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
