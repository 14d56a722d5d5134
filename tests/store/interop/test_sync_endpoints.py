"""A study indexed before the PACS is synced (from files by ingest-dicom, or by the demo seed)
gets the PACS's endpoint from the sync, on the study and on every series, by one new version;
a second sync writes nothing, and files (which carry no endpoint) never take it away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom.data
import pytest

from bench.orthanc import Orthanc
from store.interop.dicomweb import Server, Sync, endpoint_reference
from store.interop.ingest import Ingest
from store.mongo.repository import Repository
from tests.support.orthanc import (
    GENERATED,
    TEST_FILES,
    orthanc,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.slow  # each test starts an Orthanc

ARCHIVE = {"reference": "Endpoint/archive"}  # an endpoint the study had before the sync


def files(folder: Path) -> list[Path]:
    """The files Orthanc was loaded with (the fixture wrote the generated study there)."""
    return [Path(pydicom.data.get_testdata_file(n)) for n in TEST_FILES] + [folder / "generated"]


async def by_uid(store: Repository) -> dict[str, dict[str, Any]]:
    studies = await store.search([], 100)
    return {s["identifier"][0]["value"].removeprefix("urn:oid:"): s for s in studies}


def without_endpoints(study: dict[str, Any]) -> dict[str, Any]:
    series = [{k: v for k, v in s.items() if k != "endpoint"} for s in study["series"]]
    skip = ("meta", "endpoint", "series")
    return {**{k: v for k, v in study.items() if k not in skip}, "series": series}


async def test_a_study_ingested_from_files_gets_the_endpoints_by_one_version(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
) -> None:
    paths = files(tmp_path)
    # The generated study already has an endpoint (another archive's): it stays, first.
    await Ingest(store).run(paths[:-1])
    await Ingest(store, endpoint=ARCHIVE["reference"]).run(paths[-1:])
    before = await by_uid(store)
    assert all("endpoint" not in s for study in before.values() for s in study["series"])

    sync = Sync(store, Server(orthanc.dicomweb))
    await sync.poll()
    wado = endpoint_reference(orthanc.dicomweb)
    after = await by_uid(store)
    assert after.keys() == before.keys()
    assert len(after) == 4
    for uid, study in after.items():
        had = [ARCHIVE] if uid == GENERATED else []
        assert study["endpoint"] == [*had, wado], uid
        assert all(series["endpoint"] == [wado] for series in study["series"]), uid
        assert int(study["meta"]["versionId"]) == int(before[uid]["meta"]["versionId"]) + 1
        assert without_endpoints(study) == without_endpoints(before[uid])  # nothing else
    report = sync.report.ingest
    assert (report.studies_created, report.studies_updated) == (0, 4)
    assert (report.instances_added, report.instances_duplicate) == (0, 9)
    assert sync.report.ok

    again = Sync(store, Server(orthanc.dicomweb))
    await again.poll()
    assert await by_uid(store) == after  # no new version, nothing changed
    assert again.report.ingest.studies_updated == 0

    # Files carry no endpoint: ingesting them again removes none and writes nothing.
    report = await Ingest(store).run(paths)
    assert (report.studies_updated, report.instances_added) == (0, 0)
    assert await by_uid(store) == after
