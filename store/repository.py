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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from store import indexes, paging, search
from store.claims import Claims
from store.client import Database, DuplicateKey, StoreDown
from store.fhir import edit
from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, STORE_UNAVAILABLE, VERSION_CONFLICT, fail
from store.keys import search_keys

Study = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")
ROOT = "ImagingStudy"


@dataclass
class Page:
    """One page of a keyset-paged search (the FHIR GraphQL connection)."""

    total: int | None
    offset: int
    studies: list[Study] = field(default_factory=list)
    first: str | None = None
    previous: str | None = None
    next: str | None = None
    last: str | None = None


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


def projection(fields: Iterable[str] | None, *extra: str) -> dict[str, int] | None:
    """A MongoDB projection of FHIR element paths (`series.instance.uid`); None reads all.
    A path under another selected path is dropped: MongoDB refuses the pair."""
    if fields is None:
        return None
    chosen = sorted({"id", "resourceType", *fields, *extra})
    kept = [p for p in chosen if not any(p.startswith(q + ".") for q in chosen)]
    return dict.fromkeys(kept, 1)


def same_content(a: Study, b: Study) -> bool:
    """Equal but for the server-owned meta.versionId and meta.lastUpdated."""
    def strip(study: Study) -> Study:
        meta = {k: v for k, v in study.get("meta", {}).items()
                if k not in ("versionId", "lastUpdated")}
        return {**study, "meta": meta}
    return strip(a) == strip(b)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Repository:
    """Versioned ImagingStudy storage. All writes run the pure rules in `store.fhir.edit`."""

    def __init__(self, db: Database, *, max_instances: int = 50_000, max_attempts: int = 200,
                 cursor_secret: bytes = b"imaging-api cursors") -> None:
        self._db = db
        self._studies = db[indexes.STUDIES]
        self._history = db[indexes.HISTORY]
        self._claims = Claims(db, self._studies, max_attempts)
        self.max_instances = max_instances
        self._max_attempts = max_attempts
        self._cursor_secret = cursor_secret

    @_guard
    async def ensure_indexes(self) -> None:
        await indexes.ensure(self._db)

    @_guard
    async def ping(self) -> None:
        await self._studies.find_one({"_id": "\x00ping"}, {"_id": 1})

    # -- reads --------------------------------------------------------------------------------

    @_guard
    async def get(self, study_id: str, fields: Iterable[str] | None = None) -> Study | None:
        """The study, reading only the FHIR element paths in `fields` (None: all)."""
        doc = await self._studies.find_one({"_id": study_id, **search.LIVE},
                                           projection(fields))
        return _public(doc) if doc else None

    @_guard
    async def search(self, params: search.Params, count: int, offset: int = 0,
                     sort: str | None = None, fields: Iterable[str] | None = None
                     ) -> list[Study]:
        spec = paging.sort_spec(sort)
        cursor = self._studies.find(search.to_filter(params), projection(fields))
        docs = await cursor.sort(spec).skip(offset).limit(count).to_list(length=count)
        return [_public(doc) for doc in docs]

    @_guard
    async def count(self, params: search.Params) -> int:
        return await self._studies.count_documents(search.to_filter(params))

    @_guard
    async def page(self, params: search.Params, count: int, cursor: str | None = None,
                   sort: str | None = None, fields: Iterable[str] | None = (),
                   total: bool = True) -> Page:
        """A keyset page: walking `next` to the end returns every study that matched
        throughout exactly once, whatever is inserted or deleted meanwhile. `fields=()` reads
        only sort keys (enough for cursors); `total=False` skips counting."""
        spec = paging.sort_spec(sort)
        cursors = paging.Cursors(self._cursor_secret, repr((sorted(params), spec)))
        direction, keys, offset = cursors.read(cursor) if cursor else ("first", [], 0)
        if len(keys) != (len(spec) if direction in ("after", "before") else 0):
            raise fail(BAD_USER_INPUT, "_cursor", "the cursor does not fit this query's sort")
        query = search.to_filter(params)
        if direction == "after":
            query = {"$and": [query, paging.after(spec, keys)]}
        elif direction == "before":
            query = {"$and": [query, paging.after(spec, keys, forward=False)]}
        backwards = direction in ("before", "last")
        sort_fields = [f for f, _ in spec]
        docs = await self._studies.find(query, projection(fields, "_srv.sort", "_srv.lu",
                                                          *sort_fields)).sort(
            paging.reverse(spec) if backwards else spec).limit(count + 1).to_list(count + 1)
        more = len(docs) > count
        docs = docs[:count][::-1] if backwards else docs[:count]
        matched = await self._studies.count_documents(search.to_filter(params)) \
            if total or direction == "last" else None
        if direction == "last":
            assert matched is not None
            offset = max(matched - len(docs), 0)
        elif direction == "before":
            offset = max(offset - len(docs), 0) if more else 0
        has_next = more if not backwards else direction == "before"
        has_prev = more if backwards else direction == "after"
        return Page(
            total=matched, offset=offset, studies=[_public(d) for d in docs],
            first=cursors.make("first"), last=cursors.make("last"),
            next=cursors.make("after", paging.boundary(docs[-1], spec), offset + len(docs))
            if has_next and docs else None,
            previous=cursors.make("before", paging.boundary(docs[0], spec), offset)
            if has_prev and docs else None)

    async def stream(self, params: search.Params, sort: str | None = None,
                     page_size: int = 500) -> AsyncIterator[Study]:
        """Every matching study, whole, a keyset page at a time (for export)."""
        cursor: str | None = None
        while True:
            page = await self.page(params, page_size, cursor, sort, fields=None, total=False)
            for study in page.studies:
                yield study
            if page.next is None:
                return
            cursor = page.next

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
        found, created = await self._claims.create_once(
            study["id"], if_none_exist, lambda: self._insert(study))
        assert found is not None
        return (found if created else _public(found)), created

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

    # -- undoing writes (a transaction Bundle that fails part-way) --------------------------

    @_guard
    async def purge(self, study_id: str, version_id: str) -> None:
        """Removes a study created at `version_id` as if it never was, history included."""
        result = await self._studies.delete_one({"_id": study_id, "meta.versionId": version_id})
        if result.deleted_count:
            await self._history.delete_many({"_srv.study": study_id})

    @_guard
    async def restore(self, previous: Study, version_id: str) -> None:
        """Puts `previous` back as the current version if the study is still at `version_id`."""
        doc = {"_id": previous["id"], "_srv": {"deleted": False, **search_keys(previous)},
               **previous}
        await self._studies.replace_one({"_id": previous["id"], "meta.versionId": version_id},
                                        doc)

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
            if new is old or same_content(new, old):
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
        return {"_id": study_id, "_srv": {"deleted": deleted, **search_keys(body)}, **body}

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
