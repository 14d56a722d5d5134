"""The ImagingStudy store over a MongoDB database: versioned writes (reads: store/mongo/reads.py).

Each study is one document: the FHIR JSON with `_id` (= id) and a private `_srv` key that
reads strip. Every write is one compare-and-set on that document's `meta.versionId`; the
previous version is copied to the history collection first, so a crash between the two steps
loses nothing and a single write needs no multi-document transaction.

Versions only ever grow: `meta.versionId` of an id increases by one with every write, a delete
and an undone write included, and a history entry `(id, version)` is written once and never
replaced (writing a different content under a stored version is a bug, refused loudly).

A deleted study stays as a tombstone (`_srv.deleted`), which keeps in `_srv.was` the subject
and status the study had, so the delete event can say them (store/mongo/events.py)."""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson

from store.fhir import Study, edit, endpoints
from store.fhir.identity import study_uid, uid_element
from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, VERSION_CONFLICT, DuplicateUid, fail
from store.fhir.validate import MAX_SERIES
from store.mongo import appends, client, history, indexes, search
from store.mongo.cache import StudyCache
from store.mongo.claims import Claims
from store.mongo.client import Database, DuplicateKey
from store.mongo.events import Bus, Change, change_of
from store.mongo.keys import search_keys
from store.mongo.reads import ROOT, Page, Reads, guarded, projection, public
from store.mongo.rekey import rekey

__all__ = ["Guard", "HistoryClash", "Page", "Repository", "projection", "same_content"]
Guard = Callable[[Study], None] | None
T = TypeVar("T")
# The largest patch back a document carries (history.py); beyond, the version is kept whole.
BACK_BYTES = 1 << 20


class HistoryClash(RuntimeError):
    """A version of a study was about to be stored twice with different contents: versions
    were reused, which the write path must never do."""


class Publisher(Protocol):
    """Where a write's change event goes: the event bus, or a transaction's deferred list."""

    def publish(self, change: Change) -> None: ...


class _Deferred:
    """Holds the change events of a server transaction until it commits."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def publish(self, change: Change) -> None:
        self.changes.append(change)


def same_content(a: Study, b: Study) -> bool:
    """Equal but for the server-owned meta.versionId and meta.lastUpdated."""

    def strip(study: Study) -> Study:
        meta = {
            k: v for k, v in study.get("meta", {}).items() if k not in ("versionId", "lastUpdated")
        }
        return {**study, "meta": meta}

    return strip(a) == strip(b)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Repository(Reads):
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

    # -- the compare-and-set core -------------------------------------------------------------

    async def _write(
        self,
        study_id: str,
        version_id: str | None,
        change: Callable[[Study], Study],
        *,
        tombstone: bool = False,
        guard: Guard = None,
    ) -> Study:
        for attempt in range(self._max_attempts):
            doc = await self._studies.find_one({"_id": study_id, **search.LIVE})
            if doc is None:
                raise fail(NOT_FOUND, ROOT, f"no ImagingStudy with id '{study_id}'")
            old = public(doc)
            if guard is not None:
                # A caller's precondition, checked on the version being replaced and before
                # the version comparison, so a refused caller learns nothing of the study.
                guard(old)
            current = doc["meta"]["versionId"]
            if version_id is not None and version_id != current:
                raise self._conflict(version_id, current)
            new = await asyncio.to_thread(change, old)  # pure; off the event loop
            if new is old or same_content(new, old):
                return old  # an unchanged write keeps its version
            await self._keep(doc)
            replacement = self._document(
                new, study_id, int(current) + 1, deleted=tombstone, was=old, back=True
            )
            await self._bounded(doc, replacement)
            try:
                result = await self._studies.replace_one(
                    {"_id": study_id, "meta.versionId": current}, replacement
                )
            except DuplicateKey:
                await self._refuse_duplicate(replacement)
                raise
            if result.matched_count == 1:
                self._publish("update", replacement)
                return public(replacement)
            if version_id is not None:
                raise self._conflict(version_id, "a newer version")
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        raise fail(
            VERSION_CONFLICT,
            f"{ROOT}.meta.versionId",
            "the study changed under this write too many times; retry it",
        )

    async def _append(
        self,
        study_id: str,
        version_id: str | None,
        guard: Guard,
        plan: Callable[[dict[str, Any], str], appends.Plan | None],
    ) -> Study | None:
        """The compare-and-set of an append: one update under the version condition, after
        keeping the history entry the replaced version needs, as `_write` does. None: the
        append does not apply (appends.plan_instances) and the caller runs the whole rules."""
        for attempt in range(self._max_attempts):
            doc = await self._studies.find_one({"_id": study_id, **search.LIVE}, appends.FIELDS)
            if doc is None:
                return None  # the whole rules say NOT_FOUND
            if guard is not None:
                guard(public(doc))  # before the version comparison, as in `_write`
            current = doc["meta"]["versionId"]
            if version_id is not None and version_id != current:
                raise self._conflict(version_id, current)
            made = await asyncio.to_thread(plan, doc, _now())  # the rules: off the event loop
            if made is None:
                return None
            if not await self._keep(doc, whole=False):
                return None
            new = await self._studies.find_one_and_update(
                made.filter, made.update, return_document=client.AFTER
            )
            if new is not None:
                self._publish("update", new)
                return public(new)
            still = await self._studies.find_one(
                {"_id": study_id, "meta.versionId": current}, {"_id": 1}
            )
            if still is not None:
                return None  # a new instance's UID is in the study: the rules say how
            if version_id is not None:
                raise self._conflict(version_id, "a newer version")
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        return None

    @guarded
    async def check_uid(self, study: Study) -> None:
        """Raises DuplicateUid when another live study carries this study's Study Instance
        UID (a dry run's check; a real write is refused by the unique index itself)."""
        await self._refuse_duplicate({**study, "_id": study.get("id")})

    async def _refuse_duplicate(self, doc: dict[str, Any]) -> None:
        """Raises DuplicateUid when another live study holds this document's Study Instance
        UID (the unique index refused the write). Asked of the data rather than read from the
        driver's error, which does not say reliably which index refused."""
        uid = study_uid(doc)
        if uid is None:
            return
        holder = await self._studies.find_one(
            {"_srv.uid": uid, "_id": {"$ne": doc["_id"]}}, {"_id": 1}
        )
        if holder is not None:
            raise DuplicateUid(uid_element(doc), uid, str(holder["_id"]))

    def _publish(self, action: str, doc: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.publish(change_of(action, doc))

    @staticmethod
    def _conflict(sent: str, stored: str) -> Exception:
        return fail(
            VERSION_CONFLICT,
            f"{ROOT}.meta.versionId",
            f"versionId '{sent}' is not "
            f"the stored version ({stored}); read the study again and retry",
        )

    async def _keep(self, doc: dict[str, Any], whole: bool = True) -> bool:
        """Inserts the history entry the replacement of stored document `doc` needs first:
        the patch `doc` carries back to the version before it (store/mongo/history.py).
        False: `doc` is not `whole` (an append's projection) and the entry stored already is
        a whole version, which only the whole document can be compared with."""
        kept = history.entry(doc)
        if kept is None:
            return True
        stored = await self._insert_once(self._history, kept)
        if stored is None or stored == kept:
            return True
        if not whole and "patch" not in stored["_srv"]:
            return False
        # A retry after a crash between keeping and replacing, or a write that lost its
        # compare-and-set, inserts the same entry again, which is harmless; any other content
        # under a stored version means versions were reused, and overwriting would hide it.
        if not history.same_entry(stored, kept, public(doc)):
            raise HistoryClash(
                f"history of study {doc['id']} already holds a different version "
                f"{kept['_srv']['version']}"
            )
        return True

    async def _bounded(self, replaced: dict[str, Any], replacement: dict[str, Any]) -> None:
        """A patch back larger than BACK_BYTES (a study rewritten or deleted whole) would make
        the document up to twice the study, against MongoDB's 16 MiB per document: the
        replaced version is then kept whole in history at once (the same entry whoever
        writes it) and the replacement carries no patch."""
        back = replacement["_srv"].get("back")
        if back is None or len(orjson.dumps(back)) <= BACK_BYTES:
            return
        del replacement["_srv"]["back"]
        version = int(replaced["meta"]["versionId"])
        whole = {
            **public(replaced),
            "_id": f"{replaced['id']}/{version}",
            "_srv": {"study": replaced["id"], "version": version},
        }
        stored = await self._insert_once(self._history, whole)
        # A patch stored under it means the version was replaced meanwhile: the
        # compare-and-set that follows loses. Another whole version is a reuse of versions.
        if stored is not None and "patch" not in stored["_srv"] and stored != whole:
            raise HistoryClash(
                f"history of study {replaced['id']} already holds a different version {version}"
            )

    async def _insert_once(self, collection: Any, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Inserts `doc`, or returns the document already stored under its `_id`. Inside a
        server transaction it looks first: a refused insert there aborts the transaction."""
        if self.in_transaction:
            stored: dict[str, Any] | None = await collection.find_one({"_id": doc["_id"]})
            if stored is not None:
                return stored
        try:
            await collection.insert_one(doc)
            return None
        except DuplicateKey:
            # Studies and history entries are never removed, so the one in the way is there.
            return await collection.find_one({"_id": doc["_id"]}) or doc

    @staticmethod
    def _document(
        study: Study,
        study_id: str,
        version: int,
        deleted: bool = False,
        was: Study | None = None,
        back: bool = False,
    ) -> dict[str, Any]:
        """The stored document of a version; a tombstone (`deleted`) keeps the subject and
        status of `was`, the version it ends; with `back`, the document carries the patch
        from it back to `was` (its predecessor), which history keeps when it is replaced."""
        meta = {**study.get("meta", {}), "versionId": str(version), "lastUpdated": _now()}
        body = (
            {"id": study_id, "meta": meta} if deleted else {**study, "id": study_id, "meta": meta}
        )
        srv: dict[str, Any] = {"deleted": deleted, **search_keys(body)}
        if deleted and was is not None:
            srv["was"] = {k: was[k] for k in ("subject", "status") if k in was}
        if not deleted:
            srv["s"] = appends.summary(body)
        if back and was is not None:
            srv["back"] = history.back_patch(body, was)
        return {**body, "_id": study_id, "_srv": srv}  # private keys last, as in _keep

    async def _insert(self, study: Study) -> Study:
        doc = self._document(study, study["id"], 1)
        stored = await self._insert_once(self._studies, doc)
        if stored is None:
            self._publish("create", doc)
            return public(doc)
        # Refused: another live study may hold the Study Instance UID, or the id is taken.
        await self._refuse_duplicate(doc)
        # The id is taken. A deleted study's id may be used again; its history continues.
        if stored["_srv"]["deleted"]:
            version = stored["meta"]["versionId"]
            await self._keep(stored)
            doc = self._document(
                study, study["id"], int(version) + 1, was=public(stored), back=True
            )
            await self._bounded(stored, doc)
            try:
                result = await self._studies.replace_one(
                    {"_id": study["id"], "meta.versionId": version}, doc
                )
            except DuplicateKey:
                await self._refuse_duplicate(doc)
                raise
            if result.matched_count == 1:
                self._publish("create", doc)
                return public(doc)
        raise fail(BAD_USER_INPUT, f"{ROOT}.id", f"id '{study['id']}' is already in use")
