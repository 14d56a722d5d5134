"""The only module that knows the MongoDB driver. Motor is deprecated upstream in favour of
PyMongo's async API; switching means changing this file alone."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import bson
import orjson
from bson.raw_bson import RawBSONDocument
from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from store.mongo import keyindex, matcher, ordering, updates

__all__ = [
    "AFTER",
    "Database",
    "DuplicateKey",
    "Faults",
    "StoreDown",
    "embedded",
    "find_one_sized",
    "in_transaction",
    "open_embedded",
    "open_server",
    "transient",
    "with_faults",
]
T = TypeVar("T")

DuplicateKey = DuplicateKeyError
# Errors that mean "the store did not answer", as opposed to a refused operation.
StoreDown: tuple[type[Exception], ...] = (ConnectionFailure,)
DriverError = PyMongoError
AFTER = ReturnDocument.AFTER  # find_one_and_update answers with the document it made
Database = Any  # a motor AsyncIOMotorDatabase, or the embedded stand-in with the same methods


# One thread runs every call of the embedded store, one at a time in the order made: mongomock
# is not written for concurrent use, and its work on a large study (copying and walking 7 MiB
# for a 50,000-instance insert, a fifth of a second) would otherwise hold the event loop, which
# a driver's round trip does not (motor runs pymongo in threads too).
_EMBEDDED = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-store")


def _run(into: list[Any], method: Any, args: Any, kwargs: Any) -> None:
    """Calls a mongomock-motor coroutine method in this thread and puts its result `into` the
    caller's list: the coroutine only wraps a synchronous call, so it completes without ever
    awaiting. (Not returned through the executor's futures: asyncio keeps a future's result
    until a later turn of the loop, which for a whole study's copy raised the peak memory of
    a read by the response's size.)"""
    coroutine = method(*args, **kwargs)
    try:
        coroutine.send(None)
    except StopIteration as done:
        into.append(done.value)
        return
    coroutine.close()
    raise RuntimeError("an embedded store call awaited")


# Calls given to that thread and not finished, counted under _QUEUE: at 0 nothing runs there,
# and a read of a few values is made at once on the caller's thread (a thread's round trip,
# 0.1 ms, is most of a cached study's read).
_QUEUED = [0]
_QUEUE = threading.Lock()


def _finishing(job: Callable[[list[Any]], None], into: list[Any]) -> None:
    try:
        job(into)
    finally:
        with _QUEUE:
            _QUEUED[0] -= 1


async def _in_thread_of(job: Callable[[list[Any]], None]) -> Any:
    """What `job(into)` puts into `into`, run in the embedded store's thread."""
    into: list[Any] = []
    with _QUEUE:
        _QUEUED[0] += 1
    try:
        done = asyncio.get_running_loop().run_in_executor(_EMBEDDED, _finishing, job, into)
    except BaseException:
        with _QUEUE:
            _QUEUED[0] -= 1
        raise
    await done
    return into.pop()


async def _in_thread(method: Any, args: Any, kwargs: Any) -> Any:
    return await _in_thread_of(lambda into: _run(into, method, args, kwargs))


class _Yielding:
    """Wraps a mongomock-motor object (database, collection, cursor) so every call runs in
    the embedded store's thread and the caller awaits it, the way it awaits a network round
    trip. The event loop serves other requests meanwhile; concurrent writers interleave
    between calls, as they do on the real server, instead of each running to completion."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getitem__(self, name: str) -> _Yielding:
        return _Yielding(self._target[name])

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        if name in ("find", "find_one"):
            attr = _top_level_projection(attr)
        if name == "find":
            return functools.partial(_Found, self._target, attr)
        if name in ("find_one", "count_documents"):
            read = _read_one if name == "find_one" else _count
            return functools.partial(_embedded_read, read, self._target, attr)
        if name == "find_one_and_update":
            return functools.partial(_embedded_update, self._target, attr)
        if name in _CHANGES_IN_PLACE:
            attr = _forgetting(attr)
        if inspect.iscoroutinefunction(getattr(self._target, name)):
            if name not in _READS:
                attr = _counted(attr)

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await _in_thread(attr, args, kwargs)

            return call

        # Cursors are made and shaped (sort, limit) here, and read in the thread.
        def shape(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return _Yielding(result) if hasattr(result, "to_list") else result

        return shape

    def __aiter__(self) -> _Yielding:
        return self

    async def __anext__(self) -> Any:
        return await _in_thread(self._target.__anext__, (), {})


# -- reads: the embedded store's find, find_one and count_documents ---------------------------
# mongomock interprets the filter anew for every document, sorts through generic BSON
# comparisons and deep-copies every match before the page is cut (a worklist search of 5,000
# studies: 100 ms, all of it in the one embedded thread). Here the filter is compiled once
# (store/mongo/matcher.py), the page is sorted by key functions and only its documents are
# copied, and only their projected fields (store/mongo/ordering.py). What those modules do not
# cover (they raise matcher.Unsupported) goes to mongomock unchanged; MongoDB itself is not
# concerned (this wrapper is the embedded store's only).


def _documents(target: Any, query: Any) -> list[dict[str, Any]]:
    """The stored documents (mongomock's own objects: never handed out) that may match
    `query`: the one of its `_id` when it names one, else all, under the store's lock."""
    collection = target.__dict__.get("_AsyncMongoMockCollection__collection")
    store = getattr(collection, "_store", None)
    if store is None or not hasattr(store, "documents") or not isinstance(query, dict):
        raise matcher.Unsupported("not a mongomock collection as expected")
    key = query.get("_id")
    if type(key) is str:
        with store._rwlock.reader():  # once: `in` and `[]` would each take the lock
            found = store._documents.get(key)
        return [] if found is None else [found]
    keys = keyindex.keys_of(query)
    if keys is None:
        return list(store.documents)
    index = _KEY_INDEXES.get(store)
    if index is None or index.built != _WRITES[0]:
        index = keyindex.KeyIndex(((d["_id"], d) for d in store.documents), _WRITES[0])
        _KEY_INDEXES[store] = index
    with store._rwlock.reader():
        stored = store._documents
        return [stored[i] for i in index.candidates(keys) if i in stored]


# Every call that may write, counted in the embedded thread as it runs: a key index built
# after the last one counted is the store's current state (store/mongo/keyindex.py). Calls
# known to read only are not counted; anything else is, whatever it is.
_WRITES = [0]
_READS = frozenset(
    {
        "find_one",
        "count_documents",
        "distinct",
        "estimated_document_count",
        "index_information",
        "list_collection_names",
        "to_list",
        "next",
        "explain",
    }
)
_KEY_INDEXES: weakref.WeakKeyDictionary[Any, keyindex.KeyIndex] = weakref.WeakKeyDictionary()


def _counted(method: Any) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        _WRITES[0] += 1
        return method(*args, **kwargs)

    return call


def _compiled(query: dict[str, Any]) -> matcher.Test:
    from mongomock.helpers import patch_datetime_awareness_in_document as stored_form

    # Datetimes as the store keeps them (naive UTC, milliseconds), as mongomock's cursor does.
    return matcher.predicate(stored_form(query))  # type: ignore[no-untyped-call]


def _found(
    target: Any, query: Any, projection: Any, sort: Any, skip: int, limit: int
) -> list[dict[str, Any]]:
    query = {} if query is None else query
    test, project = _compiled(query), ordering.projector(_coarse(projection))
    docs = [doc for doc in _documents(target, query) if test(doc)]
    return [project(doc) for doc in ordering.window(ordering.ordered(docs, sort), skip, limit)]


def _read_one(target: Any, query: Any = None, *args: Any, **kwargs: Any) -> Any:
    if len(args) > 1 or set(kwargs) - {"projection"} or (args and kwargs):
        raise matcher.Unsupported("find_one options")
    projection = args[0] if args else kwargs.get("projection")
    found = _found(target, query, projection, None, 0, 1)
    return found[0] if found else None


def _count(target: Any, query: Any, **options: Any) -> int:
    skip, limit = options.pop("skip", 0), options.pop("limit", None)
    if options or type(skip) is not int or skip < 0:
        raise matcher.Unsupported("count_documents options")
    if limit is not None and (type(limit) is not int or limit <= 0):
        raise matcher.Unsupported("a limit mongomock refuses")
    test, matched = _compiled(query), 0
    for doc in _documents(target, query):
        if test(doc):
            matched += 1
            if limit is not None and matched >= skip + limit:
                break  # a bounded count stops at its bound
    count = max(matched - skip, 0)
    return count if limit is None else min(count, limit)


async def _embedded_read(read: Any, target: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
    """`find_one` or `count_documents` (`read`) in the embedded thread, else mongomock's."""

    def run(into: list[Any]) -> None:
        try:
            into.append(read(target, *args, **kwargs))
        except matcher.Unsupported:
            _run(into, method, args, kwargs)

    if _QUEUED[0] == 0 and read is _read_one:
        with _QUEUE:  # held: nothing is given to the thread meanwhile
            if _QUEUED[0] == 0 and _few_values(target, args, kwargs):
                into: list[Any] = []
                run(into)
                return into.pop()
    return await _in_thread_of(run)


def _few_values(target: Any, args: Any, kwargs: Any) -> bool:
    """A `find_one` of one `_id` projecting none of the document's lists (a study's series
    and instances are lists): a few values, read at once. Reading lists is the thread's."""
    query = args[0] if args else None
    shown = args[1] if len(args) > 1 else kwargs.get("projection")
    if not isinstance(query, dict) or type(query.get("_id")) is not str:
        return False
    if not isinstance(shown, dict):
        return False  # the whole document
    tops = {path.split(".", 1)[0] for path, show in shown.items() if path != "_id"}
    if not tops or not all(show for path, show in shown.items() if path != "_id"):
        return False
    try:
        found = _documents(target, query)
    except matcher.Unsupported:
        return False
    return all(not isinstance(doc.get(top), list) for doc in found for top in tops)


class _Found:
    """A find on the embedded store: shaped here (sort, skip, limit), read in the embedded
    thread by `to_list`. Any other use (iteration, batch_size, explain) gets mongomock's
    cursor, shaped the same."""

    def __init__(self, target: Any, find: Any, *args: Any, **kwargs: Any) -> None:
        self._target, self._find, self._args, self._kwargs = target, find, args, kwargs
        self._sort: list[tuple[str, int]] | None = None
        self._skip = self._limit = 0

    def sort(self, key: Any, direction: Any = None) -> _Found:
        self._sort = [(key, direction or 1)] if isinstance(key, str) else list(key)
        return self

    def skip(self, count: int) -> _Found:
        self._skip = count
        return self

    def limit(self, count: int) -> _Found:
        self._limit = count
        return self

    def _cursor(self) -> Any:
        cursor = self._find(*self._args, **self._kwargs)
        if self._sort is not None:
            cursor.sort(self._sort)
        return cursor.skip(self._skip).limit(self._limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(_Yielding(self._cursor()), name)

    def __aiter__(self) -> _Yielding:
        return _Yielding(self._cursor())

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        args, kwargs = self._args, self._kwargs
        if len(args) > 2 or set(kwargs) - {"filter", "projection"}:
            return await _Yielding(self._cursor()).to_list(length)  # type: ignore[no-any-return]

        def run(into: list[Any]) -> None:
            query = args[0] if args else kwargs.get("filter")
            projection = args[1] if len(args) > 1 else kwargs.get("projection")
            try:
                into.append(
                    _found(self._target, query, projection, self._sort, self._skip, self._limit)
                )
            except matcher.Unsupported:
                _run(into, self._cursor().to_list, (), {})

        return await _in_thread_of(run)  # type: ignore[no-any-return]


_NOT_HERE = object()  # the embedded update below does not handle this call: mongomock does


async def _embedded_update(target: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
    """`find_one_and_update` on the embedded store. mongomock's deep-copies the whole
    document three times and walks it in Python to match (for a 5,000-instance study, 50 ms
    per append, growing with the study). The updates the repository makes (an append: `$set`,
    `$push` and `$addToSet` with `$each`, under equality and `$nin` conditions, answering with
    the new document) are done here instead, copying only the containers on the updated paths:
    the new document shares the rest with the old, which no one changes afterwards (the
    repository's other writes replace whole documents, which mongomock does by refilling the
    stored top-level dict with fresh copies, and reads return mongomock's copies); the document
    answered shares them too and is read-only, as every study the store answers is. Any other
    call, or one touching a unique index's key, goes to mongomock."""

    def run(into: list[Any]) -> None:
        _WRITES[0] += 1
        done = _update_by_copy(target, *args, **kwargs)
        if done is _NOT_HERE:
            _COPIED.forget()
            _run(into, method, args, kwargs)
        else:
            into.append(done)

    return await _in_thread_of(run)


def _update_by_copy(target: Any, query: Any, update: Any, **options: Any) -> Any:
    from mongomock.helpers import patch_datetime_awareness_in_document as stored_form

    collection = target.__dict__.get("_AsyncMongoMockCollection__collection")
    store = getattr(collection, "_store", None)
    if (
        store is None
        or not hasattr(store, "indexes")
        or options != {"return_document": AFTER}
        or not isinstance(query.get("_id"), str)
        or not set(update) <= {"$set", "$push", "$addToSet"}
    ):
        return _NOT_HERE
    unique = [k for i in store.indexes.values() if i.get("unique") for k, _ in i["key"]]
    paths = [path for fields in update.values() for path in fields]
    if any(p == k or p.startswith(k + ".") or k.startswith(p + ".") for p in paths for k in unique):
        return _NOT_HERE
    if query["_id"] not in store:
        return None
    old = store[query["_id"]]
    try:
        new = _COPIED.apply((id(collection), query["_id"]), old, query, update, stored_form)
    except updates.Unsupported:
        return _NOT_HERE
    if new is None:
        return None
    store[query["_id"]] = new
    return dict(new)


_COPIED = updates.Updater()
# mongomock changes a stored document in place on these (a replace clears and refills the
# same dict): what the updater remembers of stored documents is forgotten first, in the
# embedded store's thread, so no call queued before it can remember the document again.
_CHANGES_IN_PLACE = frozenset(
    {
        "replace_one",
        "update_one",
        "update_many",
        "find_one_and_replace",
        "find_one_and_delete",
        "delete_one",
        "delete_many",
        "bulk_write",
        "drop",
    }
)


def _forgetting(method: Any) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        _COPIED.forget()
        return method(*args, **kwargs)

    return call


def _top_level_projection(method: Any) -> Any:
    """mongomock applies a projection of nested paths (`series.instance.uid`) in Python,
    element by element, which costs more than the copy it saves; MongoDB does it in the
    server, where it saves network and memory. The embedded store therefore projects on
    top-level elements only: what it reads is a superset, and the study list still never
    copies instances unless they are selected."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 1:
            args = (args[0], _coarse(args[1]), *args[2:])
        elif "projection" in kwargs:
            kwargs["projection"] = _coarse(kwargs["projection"])
        return method(*args, **kwargs)

    return call


def _coarse(projection: Any) -> Any:
    """An inclusion projection widened to the top-level elements of its paths."""
    if isinstance(projection, dict) and all(v == 1 for v in projection.values()):
        return dict.fromkeys((k.split(".", 1)[0] for k in projection), 1)
    return projection


class Faults:
    """A test seam, never enabled in production: while `down` is set, every call through a
    database wrapped by `with_faults` fails the way it does when the server is unreachable."""

    def __init__(self) -> None:
        self.down = False


class _Faulty:
    def __init__(self, target: Any, faults: Faults) -> None:
        self._target = target
        self._faults = faults

    def __getitem__(self, name: str) -> _Faulty:
        return _Faulty(self._target[name], self._faults)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._faults.down:
                raise ServerSelectionTimeoutError("injected fault: the store is down")
            result = attr(*args, **kwargs)
            # Cursors, and collections (`with_options`), keep failing while the store is down.
            wrap = hasattr(result, "to_list") or hasattr(result, "find_one")
            return _Faulty(result, self._faults) if wrap else result

        return call


def with_faults(db: Database, faults: Faults) -> Database:
    return _Faulty(db, faults)


class _InSession:
    """A database whose every collection call carries one client session, so it joins that
    session's transaction: the store code runs unchanged inside it."""

    _CALLS = frozenset(
        {
            "find",
            "find_one",
            "find_one_and_update",
            "insert_one",
            "replace_one",
            "update_one",
            "delete_one",
            "delete_many",
            "count_documents",
        }
    )

    def __init__(self, target: Any, session: Any) -> None:
        self._target = target
        self._session = session

    def __getitem__(self, name: str) -> _InSession:
        return _InSession(self._target[name], self._session)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._CALLS:
            return attr
        return functools.partial(attr, session=self._session)


def _driver(db: Database) -> Any:
    """The driver's own database object under the wrappers of this module."""
    while isinstance(db, _Yielding | _Faulty | _InSession):
        db = db._target
    return db


def embedded(db: Database) -> bool:
    """Whether a database or collection is the embedded store's (mongomock), the one place
    that tells the store kinds apart."""
    driver = _driver(db)
    # mongomock-motor's classes subclass motor's: tell them apart by where they come from.
    return any(cls.__module__.startswith("mongomock") for cls in type(driver).__mro__)


async def find_one_sized(
    collection: Any, query: dict[str, Any], projection: dict[str, int] | None, embedded: bool
) -> tuple[dict[str, Any] | None, int]:
    """`find_one`, and the encoded size of what it read, for bounding a cache by bytes (the
    caller says whether the collection is the embedded store's: see `embedded`). From
    MongoDB the size is the BSON the server sent, known without a walk: the document comes
    raw and is decoded here as the driver would have. The embedded store keeps no encoded
    form, so its size is that of the JSON encoding (orjson; about a tenth of its read)."""
    if embedded:
        doc = await collection.find_one(query, projection)
        return doc, 0 if doc is None else len(orjson.dumps(doc, default=str))
    options = collection.codec_options
    raw = await collection.with_options(
        codec_options=options.with_options(document_class=RawBSONDocument)
    ).find_one(query, projection)
    if raw is None:
        return None, 0
    data = raw.raw
    return bson.decode(data, codec_options=options), len(data)


async def in_transaction(db: Database, work: Callable[[Database | None], Awaitable[T]]) -> T:
    """Runs `work` in a MongoDB multi-document transaction, handing it `db` bound to the
    transaction: committed when `work` returns, aborted when it raises, run again whole when
    the server reports a transient conflict. The embedded store has no transactions: there
    `work` gets None and runs once, and undoing a failure is the caller's part."""
    if embedded(db):
        return await work(None)
    driver = _driver(db)
    async with await driver.client.start_session() as session:
        result: T = await session.with_transaction(lambda bound: work(_InSession(db, bound)))
        return result


def transient(error: BaseException) -> bool:
    """A server transaction failed on a conflict that running it again may not meet."""
    return isinstance(error, PyMongoError) and any(
        error.has_error_label(label)
        for label in ("TransientTransactionError", "UnknownTransactionCommitResult")
    )


def open_embedded(db_name: str) -> tuple[Any, Database]:
    """An in-process store (mongomock-motor): no server, gone when the process ends."""
    from mongomock_motor import AsyncMongoMockClient

    # mongomock-motor's stub presents its client as motor's, which is generic in the document.
    client: AsyncMongoMockClient[dict[str, Any]] = AsyncMongoMockClient()
    return client, _Yielding(client[db_name])


def open_server(uri: str, db_name: str, **options: Any) -> tuple[Any, Database]:
    """A real MongoDB (replica set or sharded cluster) through motor."""
    from motor.motor_asyncio import AsyncIOMotorClient

    options.setdefault("serverSelectionTimeoutMS", 2000)
    options.setdefault("tz_aware", True)
    client = AsyncIOMotorClient(uri, **options)
    return client, client[db_name]


def close(client: Any) -> None:
    client.close()
