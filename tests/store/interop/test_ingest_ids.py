"""Deterministic ids of ingested studies: a study made from DICOM is called by its Study
Instance UID when that is a free FHIR id, so the same files give the same ids in every store and
at every start; otherwise the server picks a random id and the report says which study."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from store.interop import demo
from store.interop.ingest import Ingest, stable_id
from store.mongo import client
from store.mongo.repository import Repository
from tests.support.dicom import write

UID = "1.2.3"  # tests.support.dicom's default Study Instance UID


@asynccontextmanager
async def fresh_store(name: str) -> AsyncIterator[Repository]:
    """An embedded store of its own, as a new machine or a restart has."""
    handle, db = client.open_embedded(name)
    repo = Repository(db)
    await repo.ensure_indexes()
    try:
        yield repo
    finally:
        client.close(handle)


def test_a_study_uid_is_its_id_when_it_is_a_fhir_id() -> None:
    longest = "1." * 31 + "12"  # 64 characters: the most DICOM and FHIR allow
    assert stable_id(longest) == longest
    assert stable_id(longest + "3") is None  # 65: not a FHIR id
    assert stable_id("1.2 3") is None


async def test_the_same_file_gets_the_same_id_in_two_fresh_stores(tmp_path: Path) -> None:
    write(tmp_path, "a.dcm")
    ids = []
    for name in ("machine-a", "machine-b"):
        async with fresh_store(name) as repo:
            report = await Ingest(repo).run([tmp_path])
            assert report.random_ids == []
            ids.append([s["id"] for s in await repo.search([], 10)])
    assert ids == [[UID], [UID]]


async def test_a_restarted_demo_seed_has_the_same_ids() -> None:
    seeded = []
    for start in ("first-start", "second-start"):
        async with fresh_store(start) as repo:
            await demo.seed(repo)
            studies = await repo.search([], 1000)
            seeded.append(sorted(s["id"] for s in studies))
            from_dicom = [s for s in studies if s["subject"].get("type") == "Patient"]
            assert from_dicom, "the seed ingests pydicom's test files"
            for study in from_dicom:
                assert study["id"] == study["identifier"][0]["value"].removeprefix("urn:oid:")
    assert seeded[0] == seeded[1]


async def test_an_id_another_study_has_is_left_to_it(store: Repository, tmp_path: Path) -> None:
    # A study written by hand under the id the UID would take, about another DICOM study.
    await store.create(demo.study(UID, 1, 1))
    write(tmp_path, "a.dcm")
    report = await Ingest(store).run([tmp_path])
    assert report.studies_created == 1
    [(uid, study_id)] = report.random_ids
    assert uid == UID
    assert study_id != UID
    assert f"study {UID} created as ImagingStudy/{study_id}" in report.table()
    ingested = await store.get(study_id)
    assert ingested is not None
    assert ingested["identifier"][0]["value"] == f"urn:oid:{UID}"
    held = await store.get(UID)
    assert held is not None
    assert held["identifier"] == demo.study(UID, 1, 1)["identifier"]
    # The next run finds the study by its UID: no second study, no second random id.
    write(tmp_path, "b.dcm", SOPInstanceUID="1.2.3.1.99")
    again = await Ingest(store).run([tmp_path])
    assert (again.studies_created, again.studies_updated, again.random_ids) == (0, 1, [])


@pytest.mark.parametrize("taken", [False, True])
async def test_concurrent_ingests_of_one_study_make_one_study(
    store: Repository, tmp_path: Path, taken: bool
) -> None:
    """The conditional create on the UID decides between them whether or not the id they all
    ask for is free."""
    if taken:
        await store.create(demo.study(UID, 1, 1))
    for n in range(5):
        write(tmp_path, f"{n}.dcm", SOPInstanceUID=f"1.2.3.1.{n + 1}")
    reports = await asyncio.gather(*(Ingest(store).run([tmp_path]) for _ in range(4)))
    assert sum(r.studies_created for r in reports) == 1
    found = await store.search([("identifier", f"urn:dicom:uid|urn:oid:{UID}")], 10)
    [study] = found
    assert study["numberOfInstances"] == 5
    assert (study["id"] == UID) is not taken
    assert len(await store.search([], 10)) == 1 + taken


async def test_a_deleted_studys_id_is_taken_again_by_its_uid(
    store: Repository, tmp_path: Path
) -> None:
    """Re-ingesting a deleted study gives it back its id; its history goes on."""
    write(tmp_path, "a.dcm")
    await Ingest(store).run([tmp_path])
    await store.delete(UID, None)
    report = await Ingest(store).run([tmp_path])
    assert (report.studies_created, report.random_ids) == (1, [])
    study = await store.get(UID)
    assert study is not None
    assert study["meta"]["versionId"] == "3"
