"""The store: versioned compare-and-set writes, history, delete, conditional create, and what
concurrent writers leave behind. Runs on a real MongoDB too when MONGODB_URI is set."""

from __future__ import annotations

import asyncio

import pytest

from store.fhir.outcome import BAD_USER_INPUT, NOT_FOUND, VERSION_CONFLICT, DuplicateUid, StoreError
from store.interop import demo
from store.mongo.repository import Repository

UID_CONDITION = "identifier=urn:dicom:uid|urn:oid:{}"


async def test_create_assigns_id_and_version_one(store: Repository) -> None:
    resource = demo.study("x", 1, 2)
    del resource["id"]
    study, created = await store.create(resource)
    assert created
    assert study["meta"]["versionId"] == "1"
    assert study["meta"]["lastUpdated"].endswith("Z")
    assert await store.get(study["id"]) == study


async def test_client_id_must_be_unused(store: Repository) -> None:
    await store.create(demo.study("same", 1, 1))
    with pytest.raises(StoreError) as caught:
        await store.create(demo.study("same", 1, 1))
    assert caught.value.code == BAD_USER_INPUT
    assert caught.value.issues[0].expression == "ImagingStudy.id"


async def test_every_write_bumps_the_version_and_keeps_history(store: Repository) -> None:
    await store.create(demo.study("h", 1, 1))
    await store.add_instances("h", demo.uid("h", 1), [demo.instance("h", 1, 2)], None)
    await store.set_status("h", "cancelled", "2")
    versions = await store.history("h", 10)
    assert [v["meta"]["versionId"] for v in versions] == ["3", "2", "1"]
    assert [v["status"] for v in versions] == ["cancelled", "available", "available"]
    assert versions[2]["numberOfInstances"] == 1
    assert (await store.history("h", 2))[1]["meta"]["versionId"] == "2"


async def test_unchanged_writes_keep_the_version(store: Repository) -> None:
    await store.create(demo.study("u", 1, 2))
    again = await store.add_instances("u", demo.uid("u", 1), [demo.instance("u", 1, 1)], "1")
    same = await store.set_status("u", "available", None)
    assert again["meta"]["versionId"] == same["meta"]["versionId"] == "1"
    assert len(await store.history("u", 10)) == 1


async def test_stale_version_is_a_conflict_and_writes_nothing(store: Repository) -> None:
    await store.create(demo.study("c", 1, 1))
    await store.set_status("c", "cancelled", "1")
    with pytest.raises(StoreError) as caught:
        await store.set_status("c", "entered-in-error", "1")
    assert caught.value.code == VERSION_CONFLICT
    assert (await store.get("c"))["status"] == "cancelled"


async def test_delete_leaves_reads_and_lists_but_keeps_history(store: Repository) -> None:
    await store.create(demo.study("d", 1, 1))
    await store.delete("d", "1")
    assert await store.get("d") is None
    assert await store.search([("_id", "d")], 10) == []
    assert [v["meta"]["versionId"] for v in await store.history("d", 10)] == ["1"]
    with pytest.raises(StoreError) as caught:
        await store.set_status("d", "cancelled", None)
    assert caught.value.code == NOT_FOUND
    again, _ = await store.create(demo.study("d", 1, 1))
    assert again["meta"]["versionId"] == "3"  # the id's history goes on


async def test_conditional_create_returns_the_existing_match(store: Repository) -> None:
    resource = demo.study("cc", 1, 1)
    condition = UID_CONDITION.format(demo.uid("cc"))
    first, created = await store.create(resource, condition)
    second, created_again = await store.create({**resource, "id": "other"}, condition)
    assert (created, created_again) == (True, False)
    assert second == first
    await store.create({**demo.study("cc2", 1, 1), "status": resource["status"]})
    with pytest.raises(StoreError) as caught:
        await store.create(resource, f"status={resource['status']}")
    assert caught.value.issues[0].expression == "ifNoneExist"
    assert "more than one" in caught.value.message


async def test_a_study_instance_uid_names_one_live_study(store: Repository) -> None:
    resource = demo.study("one", 1, 1)
    await store.create(resource)
    for attempt in ({**resource, "id": "twin"}, {**resource, "id": None}):
        attempt = {k: v for k, v in attempt.items() if v is not None}
        with pytest.raises(DuplicateUid) as caught:
            await store.create(attempt)
        assert caught.value.issues[0].expression == "ImagingStudy.identifier[0]"
        assert caught.value.holder == "one"
        assert "one" not in caught.value.message.replace(demo.uid("one"), "")
    # An update that takes another study's UID is refused the same way, and changes nothing.
    other = await store.create(demo.study("other", 1, 1))
    with pytest.raises(DuplicateUid):
        await store.update("other", {**other[0], "identifier": resource["identifier"]}, None)
    assert (await store.get("other"))["meta"]["versionId"] == "1"
    # Deleted studies give their UID back.
    await store.delete("one", None)
    again, _ = await store.create({**resource, "id": "again"})
    assert again["id"] == "again"


async def test_two_study_instance_uids_are_two_studies(store: Repository) -> None:
    resource = demo.study("two", 1, 1)
    resource["identifier"].append({"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"})
    with pytest.raises(StoreError) as caught:
        await store.create(resource)
    assert caught.value.issues[0].expression == "ImagingStudy.identifier[1]"


async def test_condition_values_are_matched_literally(store: Repository) -> None:
    await store.create(demo.study("lit", 1, 1))
    for hostile in ('{"$ne": null}', "$where", ".*"):
        assert await store.search([("identifier", hostile)], 10) == []
        assert await store.search([("_id", hostile)], 10) == []


@pytest.mark.slow
async def test_100_concurrent_instance_adds_without_version_all_land(store: Repository) -> None:
    await store.create(demo.study("many", 1, 0))
    series_uid = demo.uid("many", 1)
    await asyncio.gather(
        *(
            store.add_instances("many", series_uid, [demo.instance("many", 1, n)], None)
            for n in range(1, 101)
        )
    )
    study = await store.get("many")
    assert study is not None
    assert len(study["series"][0]["instance"]) == 100
    assert study["numberOfInstances"] == study["series"][0]["numberOfInstances"] == 100
    assert study["meta"]["versionId"] == "101"


async def test_20_writers_on_one_version_leave_one_winner(store: Repository) -> None:
    await store.create(demo.study("race", 1, 0))
    series_uid = demo.uid("race", 1)
    results = await asyncio.gather(
        *(
            store.add_instances("race", series_uid, [demo.instance("race", 1, n)], "1")
            for n in range(20)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, StoreError)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert {e.code for e in losers} == {VERSION_CONFLICT}
    study = await store.get("race")
    assert study is not None
    assert len(study["series"][0]["instance"]) == 1


async def test_50_concurrent_conditional_creates_leave_one_study(store: Repository) -> None:
    condition = UID_CONDITION.format(demo.uid("cond"))
    results = await asyncio.gather(
        *(store.create({**demo.study("cond", 1, 1), "id": f"c{n}"}, condition) for n in range(50))
    )
    ids = {study["id"] for study, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    assert len(await store.search([("identifier", condition.split("=", 1)[1])], 100)) == 1


async def test_a_failed_conditional_create_releases_its_claim(store: Repository) -> None:
    await store.create(demo.study("taken", 1, 1))
    condition = UID_CONDITION.format(demo.uid("rej"))
    with pytest.raises(StoreError) as caught:
        await store.create({**demo.study("rej", 1, 1), "id": "taken"}, condition)
    assert caught.value.issues[0].expression == "ImagingStudy.id"
    # Released at once: the next creator does not wait for the claim to go stale.
    study, created = await asyncio.wait_for(store.create(demo.study("rej", 1, 1), condition), 1)
    assert created
    assert study["id"] == "rej"


async def test_a_database_with_duplicate_uids_is_reported_not_fatal() -> None:
    from store.mongo import client, indexes

    handle, db = client.open_embedded("legacy")
    for study_id in ("a", "b"):  # written by a version without the unique index
        await db[indexes.STUDIES].insert_one({"_id": study_id, "_srv": {"uid": "1.2.3"}})
    with pytest.raises(indexes.IndexConflict) as caught:
        await indexes.ensure(db)
    assert "_srv.uid_1" in str(caught.value)
    made = await db[indexes.HISTORY].index_information()
    assert "_srv.study_1__srv.version_-1" in made  # every other index is still made
    client.close(handle)


async def test_the_uid_system_is_written_exactly(store: Repository) -> None:
    shouting = demo.study("loud", 1, 1)
    shouting["identifier"][0]["system"] = "URN:DICOM:UID"
    with pytest.raises(StoreError) as caught:
        await store.create(shouting)
    assert caught.value.issues[0].expression == "ImagingStudy.identifier[0].system"
