"""The ImagingStudy store over a MongoDB database: its public, versioned writes (reads:
store/mongo/reads.py; the compare-and-set core they share: store/mongo/versioned.py).

Each study is one document: the FHIR JSON with `_id` (= id) and a private `_srv` key that
reads strip. Versions only ever grow: `meta.versionId` of an id increases by one with every
write, a delete and an undone write included.

A deleted study stays as a tombstone (`_srv.deleted`), which keeps in `_srv.was` the subject
and status the study had, so the delete event can say them (store/mongo/events.py)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from store.fhir import Study, edit, endpoints
from store.fhir.outcome import BAD_USER_INPUT, fail
from store.fhir.validate import MAX_SERIES
from store.mongo import appends, client, indexes
from store.mongo.cache import StudyCache
from store.mongo.claims import Claims
from store.mongo.client import Database
from store.mongo.events import Bus, Change
from store.mongo.reads import ROOT, Page, guarded, projection, public
from store.mongo.rekey import rekey
from store.mongo.versioned import Guard, HistoryClash, Publisher, Versioned, same_content

__all__ = ["Guard", "HistoryClash", "Page", "Repository", "projection", "same_content"]
T = TypeVar("T")


class _Deferred:
    """Holds the change events of a server transaction until it commits."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def publish(self, change: Change) -> None:
        self.changes.append(change)


class Repository(Versioned):
    """Versioned ImagingStudy storage. All writes run the pure rules in `store.fhir.edit`."""

    def __init__(
        self,
        db: Database,
        *,
        max_instances: int = 50_000,
        max_series: int = MAX_SERIES,
        max_attempts: int = 200,
        cursor_secret: bytes = b"imaging-api cursors",
        events: Bus | None = None,
        cache_bytes: int = 0,
    ) -> None:
        self._db = db
        # Set for the embedded store; with MongoDB a change stream feeds the bus instead, so
        # writes made by other processes are seen too.
        self.events: Publisher | None = events
        self._studies = db[indexes.STUDIES]
        self._history = db[indexes.HISTORY]
        self._claims = Claims(db, self._studies, max_attempts)
        self.max_instances = max_instances
        self.max_series = max_series
        self._max_attempts = max_attempts
        self._cursor_secret = cursor_secret
        self.in_transaction = False  # True for the copy `atomically` hands its work
        # Reads of whole studies kept by version (store/mongo/cache.py); 0 bytes: off.
        self.cache = StudyCache(cache_bytes) if cache_bytes > 0 else None
        self._embedded = client.embedded(db)

    @guarded
    async def ensure_indexes(self) -> None:
        """Creates the indexes, then brings the search keys of studies stored by an older
        version of the service up to date (store/mongo/rekey.py)."""
        await indexes.ensure(self._db)
        await rekey(self._studies)

    # -- writes -------------------------------------------------------------------------------

    @guarded
    async def create(
        self,
        resource: Study,
        if_none_exist: str | None = None,
        within: Sequence[tuple[str, str]] = (),
    ) -> tuple[Study, bool]:
        """Creates a study; returns it and whether it was created (False: `if_none_exist`
        matched an existing study, returned unchanged). `within` adds search parameters that
        every match must also meet (the caller's patient)."""
        # The rules are pure and, for a large study, take a second: off the event loop.
        study = await asyncio.to_thread(edit.create, resource, self.max_instances, self.max_series)
        study.setdefault("id", str(uuid.uuid4()))
        if if_none_exist is None:
            return await self._insert(study), True
        found, created = await self._claims.create_once(
            study["id"], if_none_exist, lambda: self._insert(study), within
        )
        assert found is not None
        return (found if created else public(found)), created

    @guarded
    async def update(
        self, study_id: str, resource: Study, version_id: str | None, guard: Guard = None
    ) -> Study:
        if resource.get("id", study_id) != study_id:
            raise fail(
                BAD_USER_INPUT,
                f"{ROOT}.id",
                f"the resource id '{resource['id']}' does "
                f"not match the id of the study being updated ('{study_id}')",
            )
        return await self._write(
            study_id,
            version_id,
            lambda old: edit.replace(
                old, {**resource, "id": study_id}, self.max_instances, self.max_series
            ),
            guard=guard,
        )

    @guarded
    async def set_status(
        self, study_id: str, status: str, version_id: str | None, guard: Guard = None
    ) -> Study:
        return await self._write(
            study_id, version_id, lambda old: edit.set_status(old, status), guard=guard
        )

    @guarded
    async def add_series(
        self,
        study_id: str,
        series: list[dict[str, Any]],
        version_id: str | None,
        guard: Guard = None,
    ) -> Study:
        """Adds series: one guarded append when they are plainly valid and sort after the
        study's last series (store/mongo/appends.py), else the rules whole."""
        appended = await self._append(
            study_id,
            version_id,
            guard,
            lambda doc, now: appends.plan_series(
                doc, series, self.max_instances, self.max_series, now
            ),
        )
        if appended is not None:
            return appended
        return await self._write(
            study_id,
            version_id,
            lambda old: edit.add_series(old, series, self.max_instances, self.max_series),
            guard=guard,
        )

    @guarded
    async def add_instances(
        self,
        study_id: str,
        series_uid: str,
        instances: list[dict[str, Any]],
        version_id: str | None,
        guard: Guard = None,
    ) -> Study:
        """Adds instances to a series: one guarded append when the instances are plainly
        valid and sort after the series' last one (store/mongo/appends.py), else the rules
        whole, which also answer a retry of instances already there by changing nothing."""
        appended = await self._append(
            study_id,
            version_id,
            guard,
            lambda doc, now: appends.plan_instances(
                doc, series_uid, instances, self.max_instances, now
            ),
        )
        if appended is not None:
            return appended
        return await self._write(
            study_id,
            version_id,
            lambda old: edit.add_instances(old, series_uid, instances, self.max_instances),
            guard=guard,
        )

    @guarded
    async def add_endpoints(
        self,
        study_id: str,
        study: list[dict[str, Any]],
        series: dict[str, list[dict[str, Any]]],
        version_id: str | None,
        guard: Guard = None,
    ) -> Study:
        """Appends the endpoint references the study (`study`) and its series (`series`, by
        UID) lack (store/fhir/endpoints.py); a study that holds them all keeps its version."""
        return await self._write(
            study_id,
            version_id,
            lambda old: endpoints.add_endpoints(
                old, study, series, self.max_instances, self.max_series
            ),
            guard=guard,
        )

    @guarded
    async def remove_series(
        self, study_id: str, uids: list[str], version_id: str | None, guard: Guard = None
    ) -> Study:
        return await self._write(
            study_id, version_id, lambda old: edit.remove_series(old, uids), guard=guard
        )

    @guarded
    async def remove_instances(
        self,
        study_id: str,
        series_uid: str,
        uids: list[str],
        version_id: str | None,
        guard: Guard = None,
    ) -> Study:
        return await self._write(
            study_id,
            version_id,
            lambda old: edit.remove_instances(old, series_uid, uids),
            guard=guard,
        )

    @guarded
    async def delete(self, study_id: str, version_id: str | None, guard: Guard = None) -> None:
        """The study leaves reads and lists; its versions stay in history."""
        await self._write(study_id, version_id, lambda old: {}, tombstone=True, guard=guard)

    # -- all-or-nothing groups of writes (transaction Bundles) -----------------------------

    @guarded
    async def atomically(self, work: Callable[[Repository | None], Awaitable[T]]) -> T:
        """Runs `work` on a copy of this repository inside a MongoDB multi-document
        transaction: its writes commit together when it returns, none do when it raises, and
        it may run again whole after a transient conflict. On the embedded store, which has no
        transactions, `work` gets None: it writes through this repository and undoes its own
        writes on failure (`undo`)."""
        deferred = _Deferred()

        async def attempt(db: Database | None) -> T:
            if db is None:
                return await work(None)
            deferred.changes.clear()
            bound = copy.copy(self)
            bound._db, bound._studies, bound._history = db, db[indexes.STUDIES], db[indexes.HISTORY]
            bound._claims = Claims(db, bound._studies, self._max_attempts)
            bound.events, bound.in_transaction = deferred, True
            return await work(bound)

        result = await client.in_transaction(self._db, attempt)
        if self.events is not None:  # subscribers hear of committed writes only
            for change in deferred.changes:
                self.events.publish(change)
        return result

    @guarded
    async def undo(self, study_id: str, written: str, previous: Study | None) -> bool:
        """Takes back a write that made version `written`: a new version with the content of
        `previous` again, or a tombstone when the write was a create (`previous` None), so
        the version keeps growing and the history keeps every version. Only if the study is
        still at `written`: when someone wrote it since, their write stands and this returns
        False."""
        doc = await self._studies.find_one({"_id": study_id, "meta.versionId": written})
        if doc is None or doc["_srv"]["deleted"]:
            return False
        await self._keep(doc)
        replacement = self._document(
            previous or {},
            study_id,
            int(written) + 1,
            deleted=previous is None,
            was=public(doc),
            back=True,
        )
        await self._bounded(doc, replacement)
        result = await self._studies.replace_one(
            {"_id": study_id, "meta.versionId": written}, replacement
        )
        if result.matched_count != 1:
            return False
        self._publish("update", replacement)
        return True

    @guarded
    async def check_uid(self, study: Study) -> None:
        """Raises DuplicateUid when another live study carries this study's Study Instance
        UID (a dry run's check; a real write is refused by the unique index itself)."""
        await self._refuse_duplicate({**study, "_id": study.get("id")})
