"""The compare-and-set core of the versioned study store (the public writes:
store/mongo/repository.py).

Every write is one compare-and-set on a study document's `meta.versionId`; the replaced
version's history entry (a patch back, store/mongo/history.py) is inserted first, so a crash
between the two steps loses nothing and a single write needs no multi-document transaction.
Versions only ever grow, and a history entry `(id, version)` is written once and never replaced:
writing a different content under a stored version is a bug, refused loudly (HistoryClash)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from store.fhir import Study
from store.fhir.identity import study_uid, uid_element
from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, VERSION_CONFLICT, DuplicateUid, fail
from store.mongo import appends, client, history, search
from store.mongo.client import DuplicateKey
from store.mongo.events import Change, change_of
from store.mongo.keys import search_keys
from store.mongo.reads import ROOT, Reads, public

Guard = Callable[[Study], None] | None

# The largest patch back a document carries (history.py); beyond, the version is kept whole.
BACK_BYTES = 1 << 20


class HistoryClash(RuntimeError):
    """A version of a study was about to be stored twice with different contents: versions
    were reused, which the write path must never do."""


class Publisher(Protocol):
    """Where a write's change event goes: the event bus, or a transaction's deferred list."""

    def publish(self, change: Change) -> None: ...


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


class Versioned(Reads):
    """Compare-and-set writes of whole documents and appends, with their history entries;
    the repository's public writes are built on these."""

    _history: Any
    _max_attempts: int
    events: Publisher | None
    in_transaction: bool

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
            if await self._replace(study_id, current, replacement):
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

    async def _replace(self, study_id: str, version: str, doc: dict[str, Any]) -> bool:
        """The compare-and-set: `doc` replaces the study while it is at `version`; False when
        it is not (any more). DuplicateUid when another live study holds doc's Study UID."""
        try:
            result = await self._studies.replace_one(
                {"_id": study_id, "meta.versionId": version}, doc
            )
        except DuplicateKey:
            await self._refuse_duplicate(doc)
            raise
        return bool(result.matched_count == 1)

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
            if await self._replace(study["id"], version, doc):
                self._publish("create", doc)
                return public(doc)
        raise fail(BAD_USER_INPUT, f"{ROOT}.id", f"id '{study['id']}' is already in use")
