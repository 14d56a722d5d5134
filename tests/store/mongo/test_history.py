"""History kept as reverse patches (store/mongo/history.py): its size follows the changes, every
acknowledged version is rebuilt whole at every instant, and stores written before patches (whole
versions in history) keep reading. Runs on a real MongoDB too when MONGODB_URI is set."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from store.fhir import Study
from store.interop import demo
from store.mongo import indexes, versioned
from store.mongo.repository import Repository

SOP = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}


def instance(n: int) -> dict[str, Any]:
    return {"uid": f"1.2.826.0.77.{n}", "number": n, "sopClass": SOP}


async def history_bytes(store: Repository, study_id: str) -> int:
    entries = await store._history.find({"_srv.study": study_id}).to_list(None)
    return sum(len(orjson.dumps(e, default=str)) for e in entries)


async def test_history_of_a_study_grown_one_instance_at_a_time_stays_proportional(
    store: Repository,
) -> None:
    """Whole copies per version made 200 single-instance additions store about 100 study
    copies; patches store what each addition changed."""
    study, _ = await store.create(demo.study("grown", 1, 1))
    uid = study["series"][0]["uid"]
    for n in range(2, 202):
        await store.add_instances("grown", uid, [instance(n)], None)
    final = await store._studies.find_one({"_id": "grown"})
    assert final["numberOfInstances"] == 201
    assert await history_bytes(store, "grown") < 3 * len(orjson.dumps(final, default=str))
    versions = await store.history("grown", 300)
    assert [len(v["series"][0]["instance"]) for v in versions] == list(range(201, 0, -1))


async def mixed_writes(store: Repository) -> list[Study]:
    """Every kind of write, each acknowledged version as the write answered it."""
    made = [(await store.create(demo.study("m", 2, 3)))[0]]
    uid = made[0]["series"][0]["uid"]
    made.append(await store.add_instances("m", uid, [instance(10), instance(11)], None))
    made.append(await store.add_instances("m", uid, [instance(0)], None))  # sorts first
    made.append(await store.update("m", {**made[-1], "description": "renamed"}, None))
    extra = {**demo.study("x", 1, 2)["series"][0], "uid": "1.2.3.4.5.6"}
    extra["instance"] = [instance(20), instance(21)]
    made.append(await store.add_series("m", [extra], None))
    made.append(await store.remove_instances("m", uid, [instance(10)["uid"]], None))
    made.append(await store.remove_series("m", [made[0]["series"][1]["uid"]], None))
    made.append(await store.set_status("m", "cancelled", None))
    await store.delete("m", None)
    made.append((await store.create(demo.study("m", 1, 1)))[0])  # the id used again
    return made


async def test_history_rebuilds_every_version_of_every_kind_of_write(store: Repository) -> None:
    made = await mixed_writes(store)
    versions = await store.history("m", 100)
    assert versions == made[::-1]
    assert [v["meta"]["versionId"] for v in versions] == [
        "10", "8", "7", "6", "5", "4", "3", "2", "1"
    ]  # fmt: skip
    assert await store.history("m", 3) == made[::-1][:3]
    # Projected to the elements asked (and what the gate needs), rebuilt all the same.
    assert await store.history("m", 2, {"status"}) == [
        {k: v[k] for k in ("resourceType", "id", "meta", "status", "subject")}
        for v in made[::-1][:2]
    ]


async def test_a_deleted_studys_history_keeps_every_version(store: Repository) -> None:
    study, _ = await store.create(demo.study("gone", 1, 2))
    second = await store.add_instances("gone", study["series"][0]["uid"], [instance(9)], None)
    await store.delete("gone", None)
    assert await store.history("gone", 10) == [second, study]


async def test_every_acknowledged_version_rebuilds_at_every_instant(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between keeping the history entry and the compare-and-set (where a crash may stop a
    write), history still rebuilds every version acknowledged so far."""
    acknowledged: list[Study] = []
    checked: list[str] = []
    studies = store._studies

    class Checked:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(studies, name)
            if name not in ("replace_one", "find_one_and_update"):
                return attr

            async def call(*args: Any, **kwargs: Any) -> Any:
                assert await store.history("i", 100) == acknowledged[::-1]
                checked.append(name)
                return await attr(*args, **kwargs)

            return call

    monkeypatch.setattr(store, "_studies", Checked())
    acknowledged.append((await store.create(demo.study("i", 1, 2)))[0])
    uid = acknowledged[0]["series"][0]["uid"]
    acknowledged.append(await store.add_instances("i", uid, [instance(5)], None))
    acknowledged.append(await store.update("i", {**acknowledged[-1], "description": "d"}, None))
    acknowledged.append(await store.add_instances("i", uid, [instance(6)], None))
    await store.delete("i", None)
    assert await store.history("i", 100) == acknowledged[::-1]
    assert checked == ["find_one_and_update", "replace_one", "find_one_and_update", "replace_one"]


async def test_a_write_that_keeps_its_entry_and_loses_the_race_corrupts_nothing(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer keeps the history entry of the version it replaces, then another write wins
    the compare-and-set; the loser's entry is the winner's, and it retries on the new version."""
    study, _ = await store.create(demo.study("race", 1, 1))
    uid = study["series"][0]["uid"]
    second = await store.add_instances("race", uid, [instance(2)], None)
    studies, winners = store._studies, []

    class Interleaved:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(studies, name)
            if name != "find_one_and_update" or winners:
                return attr

            async def call(*args: Any, **kwargs: Any) -> Any:
                # After the loser kept its entry: another writer wins meanwhile.
                monkeypatch.setattr(store, "_studies", studies)
                winners.append(await store.update("race", {**second, "description": "w"}, None))
                return await attr(*args, **kwargs)

            return call

    monkeypatch.setattr(store, "_studies", Interleaved())
    last = await store.add_instances("race", uid, [instance(3)], None)
    assert last["meta"]["versionId"] == "4"
    assert last["description"] == "w"
    assert await store.history("race", 10) == [last, winners[0], second, study]


async def test_concurrent_appends_leave_a_history_that_rebuilds(store: Repository) -> None:
    study, _ = await store.create(demo.study("c", 1, 1))
    uid = study["series"][0]["uid"]
    made = await asyncio.gather(
        *(store.add_instances("c", uid, [instance(n)], None) for n in range(2, 22))
    )
    versions = await store.history("c", 100)
    assert sorted(made, key=lambda s: int(s["meta"]["versionId"]))[::-1] == versions[:-1]
    assert [int(v["meta"]["versionId"]) for v in versions] == list(range(21, 0, -1))


async def test_a_store_written_before_patches_keeps_its_history(store: Repository) -> None:
    """Entries that hold whole versions and a document with no patch (as every release before
    wrote them) rebuild as before, and writes go on over them."""
    made = await mixed_writes(store)
    docs = await store._studies.find({"_id": "m"}).to_list(None)
    # The same data as an older release stored it: every version whole, no patches.
    await store._history.delete_many({})
    for version in made[:-1]:
        number = int(version["meta"]["versionId"])
        kept = {"study": "m", "version": number}
        await store._history.insert_one({**version, "_id": f"m/{number}", "_srv": kept})
    srv = {k: v for k, v in docs[0]["_srv"].items() if k not in ("back", "s")}
    legacy = {**docs[0], "_srv": srv}
    await store._studies.replace_one({"_id": "m"}, legacy)
    assert await store.history("m", 100) == made[::-1]
    uid = made[-1]["series"][0]["uid"]
    newer = await store.add_instances("m", uid, [instance(99)], None)
    newest = await store.add_instances("m", uid, [instance(100)], None)
    assert await store.history("m", 100) == [newest, newer, *made[::-1]]
    assert indexes.HISTORY == store._history.name


async def test_versions_kept_whole_when_the_patch_back_is_large(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patch back over BACK_BYTES (a study rewritten whole) is not carried by the document,
    which MongoDB caps at 16 MiB: the version it replaces is kept whole at once instead."""
    monkeypatch.setattr(versioned, "BACK_BYTES", 0)
    made = await mixed_writes(store)
    assert await store.history("m", 100) == made[::-1]
    doc = await store._studies.find_one({"_id": "m"})
    assert "back" not in doc["_srv"]
    whole = await store._history.find_one({"_id": "m/9"})  # the tombstone, kept whole
    assert whole["meta"]["versionId"] == "9"


async def test_a_confined_history_of_another_patients_study_reads_as_a_missing_one(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found black-box: another patient's history answered [] only after rebuilding its
    versions, so the time taken told that the study exists, and how large it is."""
    theirs = demo.study("theirs", 2, 50, patient="pb")
    await store.create(theirs)
    await store.update("theirs", {**theirs, "description": "v2"}, "1")
    calls: list[tuple[str, Any]] = []

    class Spy:
        def __init__(self, target: Any) -> None:
            self.target = target

        def __getattr__(self, name: str) -> Any:
            attr = getattr(self.target, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append((name, args[1] if len(args) > 1 else kwargs.get("projection")))
                return attr(*args, **kwargs)

            return call

    monkeypatch.setattr(store, "_studies", Spy(store._studies))
    monkeypatch.setattr(store, "_history", Spy(store._history))
    assert await store.history("theirs", 10, subject="Patient/pa") == []
    theirs_calls = list(calls)
    calls.clear()
    assert await store.history("nothing-here", 10, subject="Patient/pa") == []
    assert theirs_calls == calls  # the same reads, whether it exists or not
    assert [name for name, _ in calls] == ["find_one"]
    assert "series" not in str(calls[0][1])
    calls.clear()
    owned = await store.history("theirs", 10, subject="Patient/pb")
    assert [v["meta"]["versionId"] for v in owned] == ["2", "1"]
    # Deleted: whose it was is read from the tombstone's patch back, not by rebuilding.
    await store.delete("theirs", "2")
    calls.clear()
    assert await store.history("theirs", 10, subject="Patient/pa") == []
    assert calls == theirs_calls
    owned = await store.history("theirs", 10, subject="Patient/pb")
    assert [v["meta"]["versionId"] for v in owned] == ["2", "1"]
