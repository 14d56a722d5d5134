"""Transaction Bundles that are all-or-nothing without losing anyone else's write: the undo is
a compare-and-set on the version the transaction itself wrote, any exception triggers it,
versions only grow for an id (deleted or not) and history entries are written once."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest

from store.fhir.outcome import VERSION_CONFLICT, fail
from store.interop import demo
from store.interop.importer import Importer
from store.mongo.repository import HistoryClash, Repository

# With MongoDB the Bundle runs in a server transaction: there is nothing to undo, and a
# concurrent writer waits for the transaction instead of interleaving with it.
SERVER = bool(os.environ.get("MONGODB_URI"))
COMPENSATING = pytest.mark.skipif(
    SERVER,
    reason="undoing writes is the embedded store's path; MongoDB aborts the transaction instead",
)


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": copy.deepcopy(r)} for r in resources],
    }


async def versions(store: Repository, study_id: str) -> list[int]:
    """Every version of a study, oldest first (its history and the current one)."""
    return sorted(int(v["meta"]["versionId"]) for v in await store.history(study_id, 1000))


def failing_create(
    store: Repository, monkeypatch: pytest.MonkeyPatch, error: Exception, before: Any = None
) -> None:
    """Makes creating a study fail, after `before` (another client's writes) has run."""

    async def create(*_: Any) -> None:
        if before is not None:
            await before()
        raise error

    monkeypatch.setattr(store, "create", create)


@COMPENSATING
async def test_undo_keeps_writes_acknowledged_meanwhile(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create(demo.study("s", 1, 1))
    series_uid = demo.uid("s", 1)
    added = [demo.instance("s", 1, n) for n in range(2, 6)]

    async def other_clients() -> None:  # acknowledged while the transaction is under way
        for item in added:
            await store.add_instances("s", series_uid, [item], None)

    failing_create(
        store, monkeypatch, fail(VERSION_CONFLICT, "ImagingStudy", "conflict"), other_clients
    )
    update = {**demo.study("s", 1, 1), "description": "from the transaction"}
    results = await Importer(store).run(transaction(update, demo.study("new", 1, 1)))

    assert [r.status for r in results] == ["updated", "rejected"]
    [issue] = results[0].outcome["issue"]
    assert "not undone" in issue["diagnostics"]
    assert "another writer" in issue["diagnostics"]
    study = await store.get("s")
    assert study is not None
    assert len(study["series"][0]["instance"]) == 5  # none of the four acknowledged adds lost
    assert study["meta"]["versionId"] == "6"
    assert await versions(store, "s") == [1, 2, 3, 4, 5, 6]


async def test_undo_of_an_update_writes_a_new_version(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create(demo.study("s", 1, 1))
    failing_create(store, monkeypatch, fail(VERSION_CONFLICT, "ImagingStudy", "conflict"))
    update = {**demo.study("s", 1, 1), "description": "from the transaction"}
    results = await Importer(store).run(transaction(update, demo.study("new", 1, 1)))

    assert [r.status for r in results] == ["rejected", "rejected"]
    study = await store.get("s")
    assert study is not None
    assert study["description"] == demo.study("s", 1, 1)["description"]
    written = await store.update("s", {**study, "description": "later"}, None)
    # Never back to a version number already handed out: 1 created, 2 written by the
    # transaction, 3 its undo, 4 the later write (MongoDB: the aborted write never was).
    history = await store.history("s", 10)
    if SERVER:
        assert [v["meta"]["versionId"] for v in history] == ["2", "1"]
    else:
        assert [v["meta"]["versionId"] for v in history] == ["4", "3", "2", "1"]
        assert history[2]["description"] == "from the transaction"
    assert written == history[0]


@pytest.mark.parametrize(
    "error", [OverflowError("date value out of range"), RuntimeError("planted-secret-4711")]
)
async def test_any_exception_undoes_the_earlier_entries(
    store: Repository, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    await store.create(demo.study("s", 1, 1))
    failing_create(store, monkeypatch, error)
    update = {**demo.study("s", 1, 1), "description": "from the transaction"}
    results = await Importer(store).run(transaction(update, demo.study("new", 1, 1)))

    assert [r.status for r in results] == ["rejected", "rejected"]
    [issue] = results[1].outcome["issue"]
    assert issue["code"] == "exception"
    assert "planted-secret" not in str(results)
    assert "failed at entry 1" in results[0].outcome["issue"][0]["diagnostics"]
    study = await store.get("s")
    assert study is not None
    assert study["description"] == demo.study("s", 1, 1)["description"]


async def test_a_failed_transaction_does_not_revive_a_deleted_study(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create(demo.study("gone", 1, 1))
    await store.delete("gone", None)
    await store.create(demo.study("s", 1, 1))

    async def conflict(*_: Any) -> None:
        raise fail(VERSION_CONFLICT, "ImagingStudy", "changed meanwhile")

    monkeypatch.setattr(store, "update", conflict)
    update = {**demo.study("s", 1, 1), "description": "from the transaction"}
    results = await Importer(store).run(transaction(demo.study("gone", 1, 1), update))

    assert [r.status for r in results] == ["rejected", "rejected"]
    assert await store.get("gone") is None
    assert await store.search([("_id", "gone")], 10) == []
    monkeypatch.undo()
    again, _ = await store.create(demo.study("gone", 1, 1))
    # 1 created, 2 deleted, then (embedded store) 3 written and 4 undone: never 1 again.
    assert int(again["meta"]["versionId"]) > 2
    history = await versions(store, "gone")
    assert history == sorted(set(history))


async def test_history_entries_are_written_once(store: Repository) -> None:
    first = await store.create(demo.study("s", 1, 1))
    await store.update("s", {**demo.study("s", 1, 1), "description": "v2"}, "1")
    kept = await store.history("s", 10)
    assert [v["meta"]["versionId"] for v in kept] == ["2", "1"]
    # Version 2 carries its patch back to version 1; replacing it keeps that patch first. A
    # retry (a crash between keeping and replacing, or a write that lost the race) keeps the
    # same entry again, which is harmless...
    doc = await store._studies.find_one({"_id": "s"})
    await store._keep(doc)
    await store._keep(doc)
    # ...another content under a version already kept is a bug, refused loudly.
    back = [{"op": "replace", "path": "/description", "value": "rewritten"}]
    with pytest.raises(HistoryClash):
        await store._keep({**doc, "_srv": {**doc["_srv"], "back": back}})
    assert (await store.history("s", 10))[1] == first[0]


class _Calls:
    """What a stand-in MongoDB server saw: each call, and whether a transaction was open."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.open = False


class _Collection:
    """An embedded collection that records each call made while the transaction is open,
    noting one made without the session or refused by the store (a refused write aborts a
    real transaction)."""

    def __init__(self, target: Any, calls: _Calls) -> None:
        self._target, self._calls = target, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        calls = self._calls
        if name not in ("find", "find_one", "insert_one", "replace_one", "count_documents"):
            return attr

        def check(session: Any) -> None:
            if calls.open:
                calls.log.append(name if session is not None else f"{name} WITHOUT SESSION")

        if name == "find":

            def find(*args: Any, session: Any = None, **kwargs: Any) -> Any:
                check(session)
                return attr(*args, **kwargs)

            return find

        async def call(*args: Any, session: Any = None, **kwargs: Any) -> Any:
            check(session)
            try:
                return await attr(*args, **kwargs)
            except Exception:
                calls.log.append(f"{name} REFUSED")
                raise

        return call


class _Session:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def with_transaction(self, work: Any) -> Any:
        self._calls.open = True
        result = await work(self)
        self._calls.open = False
        self._calls.log.append("commit")
        return result


class _Server:
    """Stands in for a motor database, so the transaction path runs without a server (it
    does not roll back: what it checks is the plumbing)."""

    def __init__(self, db: Any, calls: _Calls) -> None:
        self._db, self._calls = db, calls
        self.client = self

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._db[name], self._calls)

    async def start_session(self) -> _Session:
        return _Session(self._calls)


class _Events:
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls

    def publish(self, change: Any) -> None:
        self._calls.log.append(f"event {change.action} {change.id}")


async def test_a_server_transaction_carries_its_session_and_publishes_after_commit() -> None:
    from store.mongo import client

    handle, db = client.open_embedded("txn_plumbing")
    calls = _Calls()
    repo = Repository(_Server(db, calls))
    await repo.create(demo.study("s", 1, 1))
    await repo.create(demo.study("gone", 1, 1))
    await repo.delete("gone", None)
    repo.events = _Events(calls)
    update = {**demo.study("s", 1, 1), "description": "from the transaction"}
    results = await Importer(repo).run(
        transaction(update, demo.study("gone", 1, 1), demo.study("new", 1, 1))
    )
    client.close(handle)

    assert [(r.status, r.version) for r in results] == [
        ("updated", "2"),
        ("created", "3"),
        ("created", "1"),
    ]
    assert not [c for c in calls.log if "WITHOUT SESSION" in c or "REFUSED" in c], calls.log
    commit = calls.log.index("commit")
    assert calls.log[commit + 1 :] == ["event update s", "event create gone", "event create new"]
    assert not [c for c in calls.log[:commit] if c.startswith("event")]
