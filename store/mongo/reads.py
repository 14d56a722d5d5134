"""Reading studies: one study, searches with offset or keyset paging, the whole stream for
export, and history. Only the selected FHIR elements are read from the store."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, STORE_UNAVAILABLE, fail
from store.fhir.references import unversioned
from store.mongo import history, pages, paging, search
from store.mongo.cache import StudyCache
from store.mongo.client import StoreDown, find_one_sized
from store.mongo.search import Params

P = ParamSpec("P")
# The version probe's projection: one field, which the probe index covers (indexes.py).
VERSION = {"_id": 0, "meta.versionId": 1}
# Whose study a document is: its subject, or for a tombstone the subject its patch back to
# the latest live version adds (a delete's patch holds the whole study), and whether it is live.
_HEAD = {
    "_id": 0,
    "subject.reference": 1,
    "_srv.deleted": 1,
    "_srv.back.path": 1,
    "_srv.back.value.reference": 1,
}
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


def guarded(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turns "the store did not answer" into STORE_UNAVAILABLE, a client-visible error."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except StoreDown:
            raise fail(
                STORE_UNAVAILABLE, ROOT, "the study store did not answer; retry later"
            ) from None

    return call


def public(doc: dict[str, Any]) -> Study:
    return {k: v for k, v in doc.items() if k not in ("_id", "_srv")}


def projection(fields: Iterable[str] | None, *extra: str) -> dict[str, int] | None:
    """A MongoDB projection of FHIR element paths (`series.instance.uid`); None reads all.
    A path under another selected path is dropped: MongoDB refuses the pair."""
    if fields is None:
        return None
    return dict.fromkeys(_kept_paths(frozenset((*fields, *extra))), 1)


@functools.lru_cache(maxsize=512)
def _kept_paths(fields: frozenset[str]) -> tuple[str, ...]:
    # Quadratic in the paths, and the same few selections come again and again: kept.
    chosen = sorted({"id", "resourceType", *fields})
    return tuple(p for p in chosen if not any(p.startswith(q + ".") for q in chosen))


class Reads:
    """The read side of the repository, over its study and history collections."""

    _studies: Any
    _history: Any
    _cursor_secret: bytes
    # The version-checked study cache (store/mongo/cache.py); None: off.
    cache: StudyCache | None = None
    in_transaction: bool
    _embedded: bool  # the store is the embedded one (client.embedded)

    @guarded
    async def ping(self) -> None:
        await self._studies.find_one({"_id": "\x00ping"}, {"_id": 1})

    # -- reads --------------------------------------------------------------------------------

    @guarded
    async def get(
        self,
        study_id: str,
        fields: Iterable[str] | None = None,
        subject: str | None = None,
        instances: tuple[int, int | None] | None = None,
    ) -> Study | None:
        """The study, reading only the FHIR element paths in `fields` (None: all); with
        `subject`, only if it is about that subject (a study of another is never loaded, so
        answering takes as long as for a missing id). With `instances` (offset, count; count
        None: to the end), each series holds only `instance[offset:offset + count]`: MongoDB
        sends only that page (store/mongo/pages.py), the embedded store cuts it from the
        kept study."""
        if instances is not None:
            if instances[1] is not None and instances[1] < 1:
                raise ValueError("a page of instances holds at least one")
            return await self._paged(study_id, fields, subject, *instances)
        return await self._read(study_id, fields, subject)

    async def _read(
        self, study_id: str, fields: Iterable[str] | None, subject: str | None
    ) -> Study | None:
        fields = None if fields is None else list(fields)  # looked at twice below
        query = _one(study_id, subject)
        cache = self.cache
        # Inside a server transaction a read may see the transaction's own, uncommitted
        # writes, whose version numbers an abort gives back: never kept. A read of no series
        # (a summary, a subject) is as small as the version probe: read at once, not kept.
        if cache is None or self.in_transaction or not _has_series(fields):
            doc = await self._studies.find_one(query, projection(fields))
            return public(doc) if doc else None
        # The version is read under the same conditions as the study, so a study that is
        # deleted, or about another subject than the caller's, is absent here too and is
        # never served from the cache.
        wanted = projection(fields, "meta.versionId")
        probe = await self._studies.find_one(query, VERSION)
        if probe is None:
            cache.forget(study_id)
            return None
        kept = cache.find(study_id, probe["meta"]["versionId"], wanted)
        if kept is not None:
            return kept
        doc, size = await find_one_sized(self._studies, query, wanted, self._embedded)
        if doc is None:
            return None
        study = public(doc)
        # Kept under the version it was read at, which may be newer than the probe's.
        cache.keep(study, wanted, size)
        return dict(study)

    async def _paged(
        self,
        study_id: str,
        fields: Iterable[str] | None,
        subject: str | None,
        offset: int,
        count: int | None,
    ) -> Study | None:
        # The embedded store has the kept study to cut; a transaction's session does not
        # carry aggregations (client._InSession), and its reads are few.
        if self._embedded or self.in_transaction:
            study = await self._read(study_id, fields, subject)
            return None if study is None else pages.page_of(study, offset, count)
        steps = pages.pipeline(_one(study_id, subject), projection(fields), offset, count)
        found = await self._studies.aggregate(steps).to_list(1)
        return public(found[0]) if found else None

    @guarded
    async def explain(
        self, params: Params, sort: str | None = None, study: tuple[str, str | None] | None = None
    ) -> dict[str, Any]:
        """MongoDB's query plan (`explain`) of a search page sorted by `sort`, or, with
        `study` (id, subject), of the study cache's version probe: for operators and the
        tests that check every search uses an index. A real server only."""
        if study is not None:
            cursor = self._studies.find(_one(*study), VERSION).limit(1)
        else:
            spec = paging.sort_spec(sort)
            cursor = self._studies.find(search.to_filter(params)).sort(spec).limit(50)
        plan: dict[str, Any] = await cursor.explain()
        return plan

    @guarded
    async def match(self, params: Params) -> Study | None:
        """The first study matching `params`, whole (import matching)."""
        found = await self.search(params, 1)
        return found[0] if found else None

    async def match_id(self, study_id: str) -> Study | None:
        """The study with this id, whole (import matching)."""
        return await self.get(study_id)

    @guarded
    async def search(
        self,
        params: Params,
        count: int,
        offset: int = 0,
        sort: str | None = None,
        fields: Iterable[str] | None = None,
    ) -> list[Study]:
        spec = paging.sort_spec(sort)
        cursor = self._studies.find(search.to_filter(params), projection(fields))
        docs = await cursor.sort(spec).skip(offset).limit(count).to_list(length=count)
        return [public(doc) for doc in docs]

    @guarded
    async def count(self, params: Params, skip: int = 0, limit: int | None = None) -> int:
        """How many studies match, after the first `skip`; with `limit`, counting stops
        there (a bounded count: cheap however many match)."""
        bounds = {"skip": skip} if skip else {}
        if limit is not None:
            bounds["limit"] = limit
        matched: int = await self._studies.count_documents(search.to_filter(params), **bounds)
        return matched

    @guarded
    async def page(
        self,
        params: Params,
        count: int,
        cursor: str | None = None,
        sort: str | None = None,
        fields: Iterable[str] | None = (),
        total: bool = True,
        carry: Any = None,
    ) -> Page:
        """A keyset page: walking `next` to the end returns every study that matched
        throughout exactly once, whatever is inserted or deleted meanwhile. `fields=()` reads
        only sort keys (enough for cursors); `total=False` skips counting; the cursors made
        carry `carry` (see `carried`)."""
        spec = paging.sort_spec(sort)
        cursors = paging.Cursors(self._cursor_secret, repr((sorted(params), spec)), carry)
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
        docs = (
            await self._studies.find(
                query, projection(fields, "_srv.sort", "_srv.lu", *sort_fields)
            )
            .sort(paging.reverse(spec) if backwards else spec)
            .limit(count + 1)
            .to_list(count + 1)
        )
        more = len(docs) > count
        docs = docs[:count][::-1] if backwards else docs[:count]
        matched = (
            await self._studies.count_documents(search.to_filter(params))
            if total or direction == "last"
            else None
        )
        if direction == "last":
            assert matched is not None
            offset = max(matched - len(docs), 0)
        elif direction == "before":
            offset = max(offset - len(docs), 0) if more else 0
        has_next = more if not backwards else direction == "before"
        has_prev = more if backwards else direction == "after"
        return Page(
            total=matched,
            offset=offset,
            studies=[public(d) for d in docs],
            first=cursors.make("first"),
            last=cursors.make("last"),
            next=cursors.make("after", paging.boundary(docs[-1], spec), offset + len(docs))
            if has_next and docs
            else None,
            previous=cursors.make("before", paging.boundary(docs[0], spec), offset)
            if has_prev and docs
            else None,
        )

    def carried(self, cursor: str) -> Any:
        """What a cursor this store made carries (the search it continues), else
        BAD_USER_INPUT. The cursor still fits only the query it was made for (`page`)."""
        return paging.Cursors.opened(self._cursor_secret, cursor).get("s")

    def check_cursor(self, params: Params, cursor: str, sort: str | None = None) -> None:
        """Refuses a cursor this query did not make, even where the page is not read."""
        spec = paging.sort_spec(sort)
        paging.Cursors(self._cursor_secret, repr((sorted(params), spec))).read(cursor)

    async def stream(
        self, params: Params, sort: str | None = None, page_size: int = 500
    ) -> AsyncIterator[Study]:
        """Every matching study, whole, a keyset page at a time (for export)."""
        cursor: str | None = None
        while True:
            page = await self.page(params, page_size, cursor, sort, fields=None, total=False)
            for study in page.studies:
                yield study
            if page.next is None:
                return
            cursor = page.next

    @guarded
    async def history(
        self,
        study_id: str,
        count: int,
        fields: Iterable[str] | None = None,
        subject: str | None = None,
    ) -> list[Study]:
        """Up to `count` stored versions, newest first, rebuilt whole from the current document
        and the patches kept in history (store/mongo/history.py), then cut to the top-level
        elements of `fields`; a deleted study keeps its history. With `subject` (a reference
        such as Patient/1): only the versions about that subject, and none unless the study's
        latest live version is about it too, so a study moved to another patient (a misfiled
        study, put right) stops showing."""
        if subject is not None:
            # Another patient's study answers as a missing one, in as little time: only whose
            # it is is read first (rebuilding its versions told its size, and that it exists,
            # by the time taken).
            head = await self._studies.find_one({"_id": study_id}, _HEAD)
            if head is None or _latest_about(head, subject) is False:
                return []
        current = await self._studies.find_one({"_id": study_id})
        versions: list[Study] = []
        newest = True
        async with contextlib.aclosing(
            history.rebuild(current, self._entries(study_id, count))
        ) as rebuilt:
            async for version in rebuilt:
                if not history.live(version):
                    continue
                if subject is not None and not _about(version, subject):
                    if newest:  # the latest live version decides whether any shows
                        return []
                    continue
                newest = False
                versions.append(history.projected(version, fields))
                if len(versions) >= count:
                    break
        return versions

    async def _entries(self, study_id: str, count: int) -> AsyncIterator[dict[str, Any]]:
        """A study's history entries, newest first, read a page at a time: the pages grow,
        since tombstones and other patients' versions may be passed over."""
        size, below = min(count + 2, 1000), None
        while True:
            query: dict[str, Any] = {"_srv.study": study_id}
            if below is not None:
                query["_srv.version"] = {"$lt": below}
            docs = (
                await self._history.find(query)
                .sort("_srv.version", -1)
                .limit(size)
                .to_list(length=size)
            )
            for doc in docs:
                yield doc
            if len(docs) < size:
                return
            below, size = docs[-1]["_srv"]["version"], min(size * 2, 1000)


def _has_series(fields: Iterable[str] | None) -> bool:
    return fields is None or any(f == "series" or f.startswith("series.") for f in fields)


def _one(study_id: str, subject: str | None) -> dict[str, Any]:
    """The filter of one live study, with `subject` (a reference such as Patient/1) only if
    about it: a reference to any version of it too (`Patient/1/_history/2`), as the search
    reads `patient`, so a read and a search agree on whose study it is. An anchored regular
    expression, which MongoDB answers from the index's keys (the cache's probe stays
    covered)."""
    query: dict[str, Any] = {"_id": study_id, **search.LIVE}
    if subject is not None:
        query["subject.reference"] = {"$regex": f"^{re.escape(subject)}{_VERSION}$"}
    return query


_VERSION = r"(/_history/[A-Za-z0-9.-]{1,64})?"  # a version of the reference, as R5 writes it


def _latest_about(head: dict[str, Any], subject: str) -> bool | None:
    """Whether the latest live version of the study whose document `head` is (read with
    _HEAD) is about `subject`; None when `head` cannot tell: a tombstone without its patch
    back (the version before it kept whole in history)."""
    srv = head.get("_srv") or {}
    if srv.get("deleted") is False:
        return _about(head, subject)
    back = srv.get("back")
    if not isinstance(back, list):
        return None
    for op in back:
        if isinstance(op, dict) and op.get("path") == "/subject":
            value = op.get("value")
            return isinstance(value, dict) and _about({"subject": value}, subject)
    return False  # the version before the tombstone had no subject


def _about(study: Study, subject: str) -> bool:
    reference = (study.get("subject") or {}).get("reference")
    return isinstance(reference, str) and unversioned(reference) == subject
