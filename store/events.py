"""Change events after committed writes: an in-process bus that subscribers read from, fed by
the repository itself (embedded store) or by a MongoDB change stream (one watcher per process,
resumed from its last token), so every worker sees every worker's writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from store.client import DriverError

log = logging.getLogger("imaging.events")
Study = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One committed write."""

    action: str  # create | update | delete
    id: str
    version_id: str
    status: str | None
    resource: Study | None  # the new version; None for a delete
    # What a change is rendered to (say, one subscription's encoded payload), keyed by the
    # renderer: every subscriber that renders it alike shares one encoding.
    renders: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def patient(self) -> str | None:
        return ((self.resource or {}).get("subject") or {}).get("reference")


def change_of(action: str, doc: dict[str, Any]) -> Change:
    """The Change a stored document stands for (a tombstone is a delete)."""
    public = {k: v for k, v in doc.items() if k not in ("_id", "_srv")}
    if doc.get("_srv", {}).get("deleted"):
        action, public = "delete", {}
    meta = doc.get("meta", {})
    return Change(action, str(doc["_id"]), meta.get("versionId", ""), public.get("status"),
                  public or None)


def from_change_stream(event: dict[str, Any]) -> Change | None:
    """Maps a MongoDB change event on the study collection to a Change (None: not ours)."""
    kind = event.get("operationType")
    if kind == "delete":  # a purge (an undone create): the study never was
        return Change("delete", str(event["documentKey"]["_id"]), "", None, None)
    doc = event.get("fullDocument")
    if kind not in ("insert", "replace", "update") or not doc:
        return None
    return change_of("create" if kind == "insert" else "update", doc)


class Overrun(Exception):
    """The subscriber fell more than `backlog` events behind and was dropped."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        super().__init__(f"the subscriber fell more than {backlog} events behind")


class Bus:
    """Fan-out of Changes to every current subscriber. A subscriber that falls more than
    `backlog` events behind is dropped rather than slowing the writers down: its iterator
    raises Overrun."""

    def __init__(self, backlog: int = 1_000) -> None:
        self.backlog = backlog
        self._queues: set[asyncio.Queue[Change | None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, change: Change) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                # What it has not read is no use to it now (it has to catch up by reading
                # anyway), so its memory goes at once and it hears of the drop first.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Change]]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue(self.backlog)
        self._queues.add(queue)

        async def changes() -> AsyncIterator[Change]:
            while (change := await queue.get()) is not None:
                yield change
            raise Overrun(self.backlog)
        try:
            yield changes()
        finally:
            self._queues.discard(queue)


class ChangeStreamFeeder:
    """Watches the study collection and publishes each change; resumes after errors."""

    def __init__(self, collection: Any, bus: Bus, retry_seconds: float = 1.0) -> None:
        self.collection = collection
        self.bus = bus
        self.retry_seconds = retry_seconds
        self.resume_token: Any = None

    async def run(self) -> None:
        while True:
            try:
                async with self.collection.watch(full_document="updateLookup",
                                                 resume_after=self.resume_token) as stream:
                    async for event in stream:
                        self.resume_token = event["_id"]
                        change = from_change_stream(event)
                        if change is not None:
                            self.bus.publish(change)
            except DriverError as error:
                log.warning("change stream interrupted (%s); resuming", type(error).__name__)
                await asyncio.sleep(self.retry_seconds)
