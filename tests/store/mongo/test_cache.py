"""The version-checked study cache (store/mongo/cache.py) as `Reads.get` uses it: a kept study
answers only while the store still holds its version, only reads it holds enough for, never a
deleted study or one the read's subject condition leaves out, and never inside a transaction.
Runs on a real MongoDB too when MONGODB_URI is set (the raw BSON read of the sized find)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from api.http.app import open_repository
from api.settings import Settings
from store.fhir.outcome import NOT_FOUND, StoreError
from store.interop import demo
from store.mongo import client
from store.mongo.cache import StudyCache
from store.mongo.repository import Repository

P1, P2 = "Patient/p1", "Patient/p2"


def cache_of(store: Repository) -> StudyCache:
    assert store.cache is not None, "the test store runs with the cache on (tests/conftest.py)"
    return store.cache


async def test_an_unchanged_study_is_served_from_the_cache(store: Repository) -> None:
    await store.create(demo.study("c", 2, 3))
    first = await store.get("c")
    hits = cache_of(store).hits
    again = await store.get("c")
    assert again == first
    assert cache_of(store).hits == hits + 1


async def test_a_write_is_seen_by_the_next_read(store: Repository) -> None:
    await store.create(demo.study("w", 1, 2))
    # Added instances, read through a projection like a viewer's.
    fields = {"series.instance.uid", "series.uid"}
    before = await store.get("w", fields)
    await store.add_instances("w", demo.uid("w", 1), [demo.instance("w", 1, 9)], None)
    grown = await store.get("w", fields)
    assert before is not None
    assert grown is not None
    assert len(grown["series"][0]["instance"]) == len(before["series"][0]["instance"]) + 1
    # And a whole read.
    assert (await store.get("w") or {})["status"] == "available"
    await store.set_status("w", "cancelled", None)
    after = await store.get("w")
    assert after is not None
    assert (after["status"], after["meta"]["versionId"]) == ("cancelled", "3")


async def test_a_deleted_study_is_never_served(store: Repository) -> None:
    await store.create(demo.study("d", 1, 1))
    assert await store.get("d") is not None
    assert await store.get("d", {"status"}) is not None
    await store.delete("d", None)
    assert await store.get("d") is None
    assert await store.get("d", {"status"}) is None
    with pytest.raises(StoreError) as gone:
        await store.set_status("d", "cancelled", None)
    assert gone.value.code == NOT_FOUND


async def test_a_partial_read_never_answers_a_wider_one(store: Repository) -> None:
    await store.create(demo.study("p", 2, 4))
    narrow = await store.get("p", {"series.uid"})
    assert narrow is not None
    assert "identifier" not in narrow
    assert len(cache_of(store)) == 1
    whole = await store.get("p")
    assert whole is not None
    assert whole["identifier"][0]["system"] == "urn:dicom:uid"
    assert [len(s["instance"]) for s in whole["series"]] == [4, 4]
    viewer = await store.get("p", {"series.uid", "series.instance.uid"})
    assert viewer is not None
    assert [len(s["instance"]) for s in viewer["series"]] == [4, 4]


async def test_a_whole_study_answers_a_projection_with_what_it_asks(store: Repository) -> None:
    await store.create(demo.study("q", 1, 2))
    await store.get("q")
    hits = cache_of(store).hits
    narrow = await store.get("q", {"series.uid"})
    assert cache_of(store).hits == hits + 1
    assert narrow is not None
    assert narrow["series"][0]["uid"] == demo.uid("q", 1)
    assert narrow["id"] == "q"
    assert "identifier" not in narrow


async def test_a_read_of_no_series_is_not_kept(store: Repository) -> None:
    await store.create(demo.study("n", 1, 2))
    summary = await store.get("n", {"status", "subject"})
    assert summary is not None
    assert summary["status"] == "available"
    assert len(cache_of(store)) == 0


async def test_the_subject_condition_holds_for_a_kept_study(store: Repository) -> None:
    await store.create(demo.study("theirs", 1, 1, patient="p2"))
    assert await store.get("theirs") is not None  # read whole, unconfined: kept
    assert await store.get("theirs", subject=P1) is None
    assert await store.get("theirs", {"status"}, subject=P1) is None
    mine = await store.get("theirs", subject=P2)
    assert mine is not None
    assert mine["subject"]["reference"] == P2


async def test_a_reader_changing_its_copy_does_not_change_the_next_read(
    store: Repository,
) -> None:
    await store.create(demo.study("m", 1, 1))
    first = await store.get("m")
    assert first is not None
    first["status"] = "entered-in-error"
    first.pop("series")
    again = await store.get("m")
    assert again is not None
    assert again["status"] == "available"
    assert len(again["series"]) == 1


async def test_reads_inside_a_transaction_are_not_kept(store: Repository) -> None:
    """A server transaction may read its own uncommitted version, whose number an abort
    gives back; a kept copy of it would answer for another write's content later."""
    await store.create(demo.study("t", 1, 1))
    cache_of(store).forget("t")
    bound = copy.copy(store)
    bound.in_transaction = True
    assert await bound.get("t") is not None
    assert len(cache_of(store)) == 0


async def test_the_cache_is_off_at_zero() -> None:
    _, repo = open_repository(Settings(seed=False, cache_mb=0))
    assert repo.cache is None
    assert Settings.from_env({"IMAGING_CACHE_MB": "0"}).cache_mb == 0
    _, repo = open_repository(Settings(seed=False, cache_mb=3))
    assert repo.cache is not None
    assert repo.cache.max_bytes == 3 * 2**20
    await repo.create(demo.study("off", 1, 1))
    assert await repo.get("off") == await repo.get("off")


def test_the_bound_evicts_the_least_recently_used() -> None:
    cache = StudyCache(100)
    a, b, c = ({"id": n, "meta": {"versionId": "1"}} for n in "abc")
    cache.keep(a, None, 40)
    cache.keep(b, None, 40)
    assert cache.find("a", "1", None) == a  # a is now the most recently used
    cache.keep(c, None, 40)
    assert cache.bytes == 80
    assert cache.find("b", "1", None) is None
    assert cache.find("a", "1", None) == a
    assert cache.find("c", "1", None) == c
    cache.keep({"id": "huge", "meta": {"versionId": "1"}}, None, 101)
    assert cache.find("huge", "1", None) is None
    assert cache.bytes == 80


def test_a_newer_version_drops_the_older_ones() -> None:
    cache = StudyCache(1000)
    cache.keep({"id": "s", "meta": {"versionId": "1"}, "status": "available"}, None, 10)
    assert cache.find("s", "2", None) is None
    assert len(cache) == 0
    assert cache.bytes == 0


def test_the_audit_catches_a_reader_that_changes_a_kept_study() -> None:
    cache = StudyCache(1000, audit=True)
    kept = {"id": "s", "meta": {"versionId": "1"}, "series": [{"uid": "1"}]}
    cache.keep(kept, None, 10)
    served = cache.find("s", "1", None)
    assert served is not None
    served["series"][0]["uid"] = "changed"  # a nested change reaches the kept study
    assert cache.changed() == [("s", "1")]
    with pytest.raises(AssertionError):
        cache.find("s", "1", None)


async def test_the_size_is_what_the_store_holds(store: Repository) -> None:
    await store.create(demo.study("z", 1, 50))
    embedded = client.embedded(store._studies)
    doc, size = await client.find_one_sized(store._studies, {"_id": "z"}, None, embedded)
    assert doc is not None
    assert doc["id"] == "z"
    small, small_size = await client.find_one_sized(
        store._studies, {"_id": "z"}, {"status": 1}, embedded
    )
    assert small is not None
    assert "series" not in small
    assert 0 < small_size < size / 10
    missing = await client.find_one_sized(store._studies, {"_id": "nothing"}, None, embedded)
    assert missing == (None, 0)


async def test_a_read_sends_a_version_probe_then_the_asked_projection(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create(demo.study("r", 1, 3, patient="p1"))
    sent: list[tuple[Any, Any]] = []
    real = store._studies.find_one

    async def spy(query: dict[str, Any], projection: Any = None, **kwargs: Any) -> Any:
        sent.append((dict(query), projection))
        return await real(query, projection, **kwargs)

    monkeypatch.setattr(store._studies, "find_one", spy, raising=False)
    fields = {"status", "series.uid"}
    for _ in range(3):
        assert await store.get("r", fields, subject="Patient/p1") is not None
    about = {"$regex": r"^Patient/p1(/_history/[A-Za-z0-9.-]{1,64})?$"}  # any of its versions
    live = {"_id": "r", "_srv.deleted": False, "subject.reference": about}
    probe = (live, {"_id": 0, "meta.versionId": 1})
    wanted = dict.fromkeys(["id", "meta.versionId", "resourceType", "series.uid", "status"], 1)
    # Only the first read loads the study; every read asks for the version under its own
    # conditions.
    assert sent == [probe, (live, wanted), probe, probe]


async def test_reads_during_concurrent_writes_match_their_version(store: Repository) -> None:
    """Each write adds one instance, so version k holds exactly k instances: a read that
    paired a kept study with the wrong version would show another count."""
    await store.create(demo.study("cw", 1, 1))
    series = demo.uid("cw", 1)
    seen: list[tuple[int, int]] = []

    async def write(n: int) -> None:
        await store.add_instances("cw", series, [demo.instance("cw", 1, 100 + n)], None)

    async def read() -> None:
        for _ in range(15):
            for fields in (None, {"series.instance.uid"}):
                study = await store.get("cw", fields)
                assert study is not None
                version = int(study["meta"]["versionId"])
                seen.append((version, len(study["series"][0]["instance"])))
            await asyncio.sleep(0)

    await asyncio.gather(*(write(n) for n in range(12)), *(read() for _ in range(4)))
    assert all(version == count for version, count in seen), seen
    assert len({version for version, _ in seen}) > 1  # the reads did see the writes happen
    final = await store.get("cw")
    assert final is not None
    assert final["meta"]["versionId"] == "13"
