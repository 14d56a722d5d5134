"""MongoDB change-stream events as the server sends them, and a collection that replays them
with the failover of a primary stepping down, for the tests of store/mongo/events.py's feeder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from store.mongo import client

RECORDED = [  # change events as MongoDB sends them (trimmed), one of each kind we handle
    {
        "_id": {"_data": "1"},
        "operationType": "insert",
        "documentKey": {"_id": "a"},
        "fullDocument": {
            "_id": "a",
            "_srv": {"deleted": False},
            "resourceType": "ImagingStudy",
            "id": "a",
            "status": "registered",
            "meta": {"versionId": "1"},
            "subject": {"reference": "Patient/p"},
        },
    },
    {
        "_id": {"_data": "2"},
        "operationType": "replace",
        "documentKey": {"_id": "a"},
        "fullDocument": {
            "_id": "a",
            "_srv": {"deleted": False},
            "resourceType": "ImagingStudy",
            "id": "a",
            "status": "available",
            "meta": {"versionId": "2"},
            "subject": {"reference": "Patient/p"},
        },
    },
    {
        "_id": {"_data": "3"},
        "operationType": "replace",
        "documentKey": {"_id": "a"},
        "fullDocument": {
            "_id": "a",
            "_srv": {"deleted": True},
            "id": "a",
            "meta": {"versionId": "3"},
        },
    },
    {"_id": {"_data": "4"}, "operationType": "delete", "documentKey": {"_id": "b"}},
    {"_id": {"_data": "5"}, "operationType": "invalidate"},
]


class _Stream:
    def __init__(self, events: list[dict[str, Any]], fail: bool) -> None:
        self.events, self.fail = events, fail

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for event in self.events:
            yield event
        if self.fail:
            # A connection lost to the server (pymongo's AutoReconnect is one), named through
            # the one module that imports the driver.
            raise client.StoreDown[0]("the primary stepped down")
        await asyncio.Event().wait()


class ReplayedCollection:
    """Replays recorded events; the first stream breaks after two, as a failover would."""

    def __init__(self) -> None:
        self.resumed_after: list[Any] = []

    def watch(self, full_document: str, resume_after: Any) -> _Stream:
        """A change stream from just after `resume_after` (from the start when None)."""
        self.resumed_after.append(resume_after)
        if resume_after is None:
            return _Stream(RECORDED[:2], fail=True)
        start = next(i for i, e in enumerate(RECORDED) if e["_id"] == resume_after) + 1
        return _Stream(RECORDED[start:], fail=False)
