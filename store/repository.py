"""The ImagingStudy store over a MongoDB database: reads, history and versioned writes.

Each study is one document: the FHIR JSON with `_id` (= id) and a private `_srv` key that
reads strip. Every write is one compare-and-set on that document's `meta.versionId`; the
previous version is copied to the history collection first (an idempotent upsert), so a
crash between the two steps loses nothing and no multi-document transaction is needed."""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from store import search
from store.client import Database, DuplicateKey, StoreDown
from store.fhir import edit
from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, STORE_UNAVAILABLE, VERSION_CONFLICT, fail

Study = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")
ROOT = "ImagingStudy"
# How long a conditional-create claim may wait for its study before others take it over.
CLAIM_TTL = timedelta(seconds=5)


def _guard(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except StoreDown:
            raise fail(STORE_UNAVAILABLE, ROOT, "the study store did not answer; retry "
                       "later") from None
    return call


def _public(doc: dict[str, Any]) -> Study:
    return {k: v for k, v in doc.items() if k not in ("_id", "_srv")}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Repository:
    """Versioned ImagingStudy storage. All writes run the pure rules in `store.fhir.edit`."""

    def __init__(self, db: Database, *, max_instances: int = 50_000,
                 max_attempts: int = 200) -> None:
        self._studies = db["imaging_study"]
        self._history = db["imaging_study_history"]
        self._claims = db["imaging_study_claims"]
        self.max_instances = max_instances
        self._max_attempts = max_attempts

    @_guard
    async def ensure_indexes(self) -> None:
        await self._history.create_index([("_srv.study", 1), ("_srv.version", -1)])
        await self._studies.create_index([("_srv.deleted", 1), ("started", -1), ("_id", 1)])

    @_guard
    async def ping(self) -> None:
        await self._studies.find_one({"_id": "\x00ping"}, {"_id": 1})

    # -- reads --------------------------------------------------------------------------------

    @_guard
    async def get(self, study_id: str) -> Study | None:
        doc = await self._studies.find_one({"_id": study_id, **search.LIVE})
        return _public(doc) if doc else None

    @_guard
    async def search(self, params: search.Params, count: int, offset: int = 0) -> list[Study]:
        cursor = self._studies.find(search.to_filter(params))
        cursor = cursor.sort(search.DEFAULT_SORT).skip(offset).limit(count)
        return [_public(doc) for doc in await cursor.to_list(length=count)]

    @_guard
    async def history(self, study_id: str, count: int) -> list[Study]:
        """Every stored version, newest first; a deleted study keeps its history."""
        cursor = self._history.find({"_srv.study": study_id}).sort("_srv.version", -1)
        versions = {doc["meta"]["versionId"]: _public(doc)
                    for doc in await cursor.to_list(length=None)}
        current = await self._studies.find_one({"_id": study_id, **search.LIVE})
        if current:
            versions[current["meta"]["versionId"]] = _public(current)
        ordered = sorted(versions.values(), key=lambda s: -int(s["meta"]["versionId"]))
        return ordered[:count]

    # -- writes -------------------------------------------------------------------------------

    @_guard
    async def create(self, resource: Study, if_none_exist: str | None = None
                     ) -> tuple[Study, bool]:
        """Creates a study; returns it and whether it was created (False: `if_none_exist`
        matched an existing study, returned unchanged)."""
        study = edit.create(resource, self.max_instances)
        study.setdefault("id", str(uuid.uuid4()))
        if if_none_exist is None:
            return await self._insert(study), True
        return await self._conditional_create(study, if_none_exist)

    @_guard
    async def update(self, study_id: str, resource: Study, version_id: str | None) -> Study:
        if resource.get("id", study_id) != study_id:
            raise fail(BAD_USER_INPUT, f"{ROOT}.id", f"the resource id '{resource['id']}' does "
                       f"not match the id of the study being updated ('{study_id}')")
        return await self._write(study_id, version_id, lambda old: edit.replace(
            old, {**resource, "id": study_id}, self.max_instances))

    @_guard
    async def set_status(self, study_id: str, status: str, version_id: str | None) -> Study:
        return await self._write(study_id, version_id, lambda old: edit.set_status(old, status))

    @_guard
    async def add_series(self, study_id: str, series: list[dict[str, Any]],
                         version_id: str | None) -> Study:
        return await self._write(study_id, version_id, lambda old: edit.add_series(
            old, series, self.max_instances))

    @_guard
    async def add_instances(self, study_id: str, series_uid: str,
                            instances: list[dict[str, Any]], version_id: str | None) -> Study:
        return await self._write(study_id, version_id, lambda old: edit.add_instances(
            old, series_uid, instances, self.max_instances))

    @_guard
    async def remove_series(self, study_id: str, uids: list[str],
                            version_id: str | None) -> Study:
        return await self._write(study_id, version_id, lambda old: edit.remove_series(old, uids))

    @_guard
    async def remove_instances(self, study_id: str, series_uid: str, uids: list[str],
                               version_id: str | None) -> Study:
        return await self._write(study_id, version_id, lambda old: edit.remove_instances(
            old, series_uid, uids))

    @_guard
    async def delete(self, study_id: str, version_id: str | None) -> None:
        """The study leaves reads and lists; its versions stay in history."""
        await self._write(study_id, version_id, lambda old: {}, tombstone=True)

    # -- the compare-and-set core -------------------------------------------------------------

    async def _write(self, study_id: str, version_id: str | None,
                     change: Callable[[Study], Study], *, tombstone: bool = False) -> Study:
        for attempt in range(self._max_attempts):
            doc = await self._studies.find_one({"_id": study_id, **search.LIVE})
            if doc is None:
                raise fail(NOT_FOUND, ROOT, f"no ImagingStudy with id '{study_id}'")
            current = doc["meta"]["versionId"]
            if version_id is not None and version_id != current:
                raise self._conflict(version_id, current)
            old = _public(doc)
            new = change(old)
            if new is old:
                return old  # an unchanged write keeps its version
            await self._keep(old)
            replacement = self._document(new, study_id, int(current) + 1, deleted=tombstone)
            result = await self._studies.replace_one(
                {"_id": study_id, "meta.versionId": current}, replacement)
            if result.matched_count == 1:
                return _public(replacement)
            if version_id is not None:
                raise self._conflict(version_id, "a newer version")
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        raise fail(VERSION_CONFLICT, f"{ROOT}.meta.versionId", "the study changed under this "
                   "write too many times; retry it")

    @staticmethod
    def _conflict(sent: str, stored: str) -> Exception:
        return fail(VERSION_CONFLICT, f"{ROOT}.meta.versionId", f"versionId '{sent}' is not "
                    f"the stored version ({stored}); read the study again and retry")

    async def _keep(self, old: Study) -> None:
        version = int(old["meta"]["versionId"])
        doc = {"_id": f"{old['id']}/{version}", "_srv": {"study": old["id"], "version": version},
               **old}
        await self._history.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    @staticmethod
    def _document(study: Study, study_id: str, version: int, deleted: bool = False
                  ) -> dict[str, Any]:
        meta = {**study.get("meta", {}), "versionId": str(version), "lastUpdated": _now()}
        body = {"id": study_id, "meta": meta} if deleted else {**study, "id": study_id,
                                                               "meta": meta}
        return {"_id": study_id, "_srv": {"deleted": deleted}, **body}

    async def _insert(self, study: Study) -> Study:
        doc = self._document(study, study["id"], 1)
        try:
            await self._studies.insert_one(doc)
            return _public(doc)
        except DuplicateKey:
            pass
        # The id is taken. A deleted study's id may be used again; its history continues.
        stored = await self._studies.find_one({"_id": study["id"]})
        if stored and stored["_srv"]["deleted"]:
            version = stored["meta"]["versionId"]
            doc = self._document(study, study["id"], int(version) + 1)
            result = await self._studies.replace_one(
                {"_id": study["id"], "meta.versionId": version}, doc)
            if result.matched_count == 1:
                return _public(doc)
        raise fail(BAD_USER_INPUT, f"{ROOT}.id", f"id '{study['id']}' is already in use")

    async def _conditional_create(self, study: Study, condition: str) -> tuple[Study, bool]:
        """Race-safe If-None-Exist: a claim document keyed by the condition decides which of
        several concurrent creators inserts; the others wait for and return its study."""
        params = search.parse_query(condition, "ifNoneExist")
        query = search.to_filter(params, "ifNoneExist")
        key = search.params_key(params)
        for _ in range(self._max_attempts):
            found = await self._studies.find(query).limit(2).to_list(length=2)
            if len(found) > 1:
                raise fail(BAD_USER_INPUT, "ifNoneExist", f"'{condition}' matches more than one"
                           " study; a conditional create needs at most one match")
            if found:
                return _public(found[0]), False
            try:
                await self._claims.insert_one({"_id": key, "study": study["id"],
                                               "at": datetime.now(UTC)})
            except DuplicateKey:
                await self._contend(key, query)
                continue
            try:
                return await self._insert(study), True
            except Exception:
                await self._claims.delete_one({"_id": key, "study": study["id"]})
                raise
        raise fail(VERSION_CONFLICT, "ifNoneExist", "too many concurrent conditional creates; "
                   "retry")

    async def _contend(self, key: str, query: dict[str, Any]) -> None:
        """Another creator holds the claim: wait while it is fresh, take it over when stale
        (its study never appeared in time, or no longer matches the condition)."""
        claim = await self._claims.find_one({"_id": key})
        if claim is None:
            return
        holder = await self._studies.find_one({"_id": claim["study"]}, {"_srv": 1})
        if holder is None:
            at = claim["at"] if claim["at"].tzinfo else claim["at"].replace(tzinfo=UTC)
            if datetime.now(UTC) - at < CLAIM_TTL:
                await asyncio.sleep(0.005)
                return
        elif await self._studies.count_documents({"$and": [query, {"_id": claim["study"]}]}):
            return  # the holder's study exists and matches: the next search finds it
        await self._claims.delete_one({"_id": key, "study": claim["study"]})
