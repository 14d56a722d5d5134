"""The DICOMweb sync against a real Orthanc: the synced tree is what Orthanc serves, files and
network give identical resources, a second sync changes no version, new studies appear on the
next poll and in --watch, one broken study does not stop the others, credentials are sent."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pydicom.data
import pytest
from fhir.resources.imagingstudy import ImagingStudy

from bench.orthanc import Orthanc, available
from store.interop.dicomweb import RemoteFailure, Server, Sync, endpoint_reference
from store.interop.ingest import Ingest
from store.mongo import client
from store.mongo.repository import Repository
from tests.support.orthanc import (
    AUTH_DICOM_PORT,
    AUTH_HTTP_PORT,
    GENERATED,
    HTTP_PORT,
    PROXY_PORT,
    TEST_FILES,
    generated_study,
    image,
    loaded,
    orthanc,  # noqa: F401 (a fixture)
)
from tests.support.proxy import proxy

pytestmark = pytest.mark.slow  # each test starts an Orthanc

NEW_STUDY = "1.2.826.0.1.3680043.9.7433.2"


def served_tree(server: Orthanc) -> dict[str, dict[str, Any]]:
    """What Orthanc holds, read through its own REST API (not DICOMweb): Study UID -> series
    UID -> (modality, series number, {SOP UID: instance number})."""
    auth = server.auth

    def get(path: str) -> Any:
        return httpx.get(f"{server.url}{path}", auth=auth, timeout=10).json()

    tree: dict[str, dict[str, Any]] = {}
    for study in get("/studies?expand"):
        series_tree = tree.setdefault(study["MainDicomTags"]["StudyInstanceUID"], {})
        for series_id in study["Series"]:
            series = get(f"/series/{series_id}")
            tags = series["MainDicomTags"]
            number = tags.get("SeriesNumber")
            instances = {}
            for instance in get(f"/series/{series_id}/instances"):
                found = instance["MainDicomTags"].get("InstanceNumber")
                instances[instance["MainDicomTags"]["SOPInstanceUID"]] = (
                    int(found) if found else None
                )
            series_tree[tags["SeriesInstanceUID"]] = (
                tags["Modality"],
                int(number) if number else None,
                instances,
            )
    return tree


async def stored(store: Repository) -> list[dict[str, Any]]:
    return await store.search([], 100)


def stored_tree(studies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        s["identifier"][0]["value"].removeprefix("urn:oid:"): {
            series["uid"]: (
                series["modality"]["coding"][0]["code"],
                series.get("number"),
                {i["uid"]: i.get("number") for i in series.get("instance", ())},
            )
            for series in s["series"]
        }
        for s in studies
    }


async def test_the_synced_tree_is_what_orthanc_serves(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
) -> None:
    sync = Sync(store, Server(orthanc.dicomweb))
    await sync.poll()
    studies = await stored(store)
    assert stored_tree(studies) == served_tree(orthanc)
    assert len(studies) == 4  # three test files and the generated study of three series
    wado = endpoint_reference(orthanc.dicomweb)
    assert wado["identifier"]["value"] == f"http://127.0.0.1:{HTTP_PORT}/dicom-web"
    for study in studies:
        assert study["endpoint"] == [wado]
        assert all(series["endpoint"] == [wado] for series in study["series"])
        ImagingStudy.model_validate(study)  # valid R5, endpoint included
    assert sync.report.ok
    assert (sync.report.ingest.studies_created, sync.report.ingest.instances_added) == (4, 9)


async def test_files_and_network_give_identical_resources(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
) -> None:
    await Sync(store, Server(orthanc.dicomweb)).poll()
    synced = {s["identifier"][0]["value"]: s for s in await stored(store)}
    handle, db = client.open_embedded("from_files")
    try:
        from_files = Repository(db)
        await from_files.ensure_indexes()
        paths = [str(pydicom.data.get_testdata_file(n)) for n in TEST_FILES]
        await Ingest(from_files).run([*paths, tmp_path / "generated"])
        ingested = {s["identifier"][0]["value"]: s for s in await stored(from_files)}
    finally:
        client.close(handle)

    def mapped(study: dict[str, Any]) -> dict[str, Any]:
        """The mapping's part: without the server's id and meta, and the endpoint."""
        series = [{k: v for k, v in s.items() if k != "endpoint"} for s in study["series"]]
        skip = ("id", "meta", "endpoint", "series")
        return {**{k: v for k, v in study.items() if k not in skip}, "series": series}

    assert synced.keys() == ingested.keys()
    for uid, study in synced.items():
        assert mapped(study) == mapped(ingested[uid])


async def test_a_second_sync_changes_no_version_and_a_new_study_appears(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
) -> None:
    await Sync(store, Server(orthanc.dicomweb)).poll()
    before = {s["id"]: s["meta"]["versionId"] for s in await stored(store)}
    again = Sync(store, Server(orthanc.dicomweb))
    await again.poll()
    assert {s["id"]: s["meta"]["versionId"] for s in await stored(store)} == before
    assert (again.report.ingest.studies_created, again.report.ingest.studies_updated) == (0, 0)
    assert (again.report.ingest.instances_added, again.report.ingest.instances_duplicate) == (0, 9)

    for path in generated_study(tmp_path / "new", NEW_STUDY, (2,)):
        orthanc.upload(path)
    # and one more instance in the first series of the generated study
    orthanc.upload(image(tmp_path, "extra.dcm", GENERATED, f"{GENERATED}.1", 4, Modality="CT"))
    third = Sync(store, Server(orthanc.dicomweb))
    await third.poll()
    assert third.report.ingest.studies_created == 1
    assert third.report.ingest.studies_updated == 1
    assert third.report.ingest.instances_added == 3
    assert stored_tree(await stored(store)) == served_tree(orthanc)


async def test_watch_picks_up_a_new_study_and_does_not_refetch_unchanged_ones(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
) -> None:
    sync = Sync(store, Server(orthanc.dicomweb))
    stop = asyncio.Event()
    watching = asyncio.create_task(sync.watch(0.2, stop))
    try:
        await _until(lambda: sync.report.polls >= 2, store)
        assert len(await stored(store)) == 4
        for path in generated_study(tmp_path / "new", NEW_STUDY, (1, 1)):
            await asyncio.to_thread(orthanc.upload, path)
        await _until(lambda: sync.report.ingest.studies_created == 5, store)
    finally:
        stop.set()
        await asyncio.wait_for(watching, 10)  # stop ends the watch
    assert NEW_STUDY in stored_tree(await stored(store))
    assert sync.report.studies_unchanged >= 4  # later polls fetched only what changed
    assert sync.report.ingest.instances_duplicate == 0


async def _until(condition: Any, store: Repository) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the watch did not get there within 10 s")


async def test_a_broken_study_is_reported_and_the_others_sync(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
) -> None:
    broken = {
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322/metadata": "500",  # CT_small
        "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457/metadata": "malformed",  # MR_small
        "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457/metadata": "hang",  # JPEG2000
    }
    with proxy(PROXY_PORT, orthanc.url, broken):
        sync = Sync(store, Server(f"http://127.0.0.1:{PROXY_PORT}/dicom-web", timeout=0.5))
        await sync.poll()
    failed = dict(sync.report.remote_failed)
    assert failed == {
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322": "HTTP 500 Internal Server Error",
        "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457": "malformed JSON (not DICOM JSON)",
        "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457": "timed out",
    }
    assert list(stored_tree(await stored(store))) == [GENERATED]
    assert not sync.report.ok
    assert "not read: HTTP 500" in sync.report.table()


async def test_a_bearer_token_is_sent(orthanc: Orthanc, store: Repository) -> None:  # noqa: F811
    with proxy(PROXY_PORT, orthanc.url, {}) as seen:
        await Sync(store, Server(f"http://127.0.0.1:{PROXY_PORT}/dicom-web", token="t0k")).poll()
    assert set(seen) == {"Bearer t0k"}
    assert len(await stored(store)) == 4


async def test_basic_auth_is_sent_and_needed(store: Repository, tmp_path: Path) -> None:
    if reason := available():
        pytest.skip(reason)
    server = Orthanc(AUTH_HTTP_PORT, AUTH_DICOM_PORT, tmp_path / "o", users={"pacs": "s3cret"})
    with server:  # stopped however the test ends, loading included
        loaded(server, tmp_path)
        refused = Sync(store, Server(server.dicomweb))
        with pytest.raises(RemoteFailure, match="HTTP 401"):
            await refused.poll()
        await Sync(store, Server(server.dicomweb, basic=("pacs", "s3cret"))).poll()
        assert stored_tree(await stored(store)) == served_tree(server)


async def test_since_and_study_choose_what_is_synced(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
) -> None:
    recent = Sync(store, Server(orthanc.dicomweb), since=date(2005, 1, 1))
    await recent.poll()  # the test files are of 2004, the generated study of 2024
    assert list(stored_tree(await stored(store))) == [GENERATED]
    ct = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    await Sync(store, Server(orthanc.dicomweb), studies=[ct]).poll()
    assert set(stored_tree(await stored(store))) == {GENERATED, ct}


async def test_a_study_of_another_patient_is_not_merged_and_the_others_sync(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
) -> None:
    other = {
        "resourceType": "ImagingStudy",
        "status": "registered",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{GENERATED}"}],
        "subject": {"type": "Patient", "identifier": {"value": "ANOTHER-MRN"}},
    }
    created, _ = await store.create(other)
    sync = Sync(store, Server(orthanc.dicomweb))
    await sync.poll()
    [(uid, why)] = sync.report.ingest.failed
    assert uid == GENERATED
    assert "about another patient" in why
    assert f"study {GENERATED} not written" in sync.report.table()
    studies = await stored(store)
    assert len(studies) == 4
    [kept] = [s for s in studies if s["id"] == created["id"]]
    assert kept["meta"]["versionId"] == created["meta"]["versionId"]
    assert "series" not in kept
