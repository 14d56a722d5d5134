"""DICOM ingest: pydicom's own test files become the studies an independent reading of the
same files predicts; re-ingesting changes nothing; results validate as R5; edge cases
(empty Patient ID, no SeriesNumber, empty StudyDate) still make valid studies."""

from __future__ import annotations

import asyncio
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fhir.resources.imagingstudy import ImagingStudy

from store.interop import dicom
from store.interop.ingest import Ingest
from store.mongo.repository import Repository
from tests.support.dicom import write

CT = "1.2.840.10008.5.1.4.1.1.2"


def expected_tree(folder: Path) -> dict[str, dict[str, set[str]]]:
    """Study UID -> series UID -> SOP UIDs, read here with pydicom, by the documented rules:
    files pydicom cannot read as DICOM (a bare dataset, without the file header, included),
    or without the three UIDs, Modality or SOP Class are not instances."""
    tree: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # not readable as DICOM: not counted
            continue
        values = [
            str(ds.get(k, "") or "").strip()
            for k in (
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
                "Modality",
                "SOPClassUID",
            )
        ]
        if all(values):
            tree[values[0]][values[1]].add(values[2])
    return tree


def stored_tree(studies: list[dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    return {
        s["identifier"][0]["value"].removeprefix("urn:oid:"): {
            series["uid"]: {i["uid"] for i in series.get("instance", ())} for series in s["series"]
        }
        for s in studies
    }


async def test_pydicom_test_files_become_the_expected_studies(store: Repository) -> None:
    folder = dicom.test_files()
    report = await Ingest(store).run([folder])
    studies = await store.search([], 1000)
    expected = expected_tree(folder)
    assert stored_tree(studies) == expected
    assert report.studies_created == len(expected)
    instances = sum(len(uids) for series in expected.values() for uids in series.values())
    assert report.instances_added == instances
    assert report.files == sum(1 for p in folder.rglob("*") if p.is_file())
    assert report.skipped["not a DICOM file"] > 0
    for study in studies:
        ImagingStudy.model_validate(study)
        assert study["numberOfInstances"] == sum(len(s["instance"]) for s in study["series"])

    versions = {s["id"]: s["meta"]["versionId"] for s in studies}
    again = await Ingest(store).run([folder])
    assert (again.studies_created, again.studies_updated, again.instances_added) == (0, 0, 0)
    assert again.instances_duplicate == report.instances_added + report.instances_duplicate
    assert {s["id"]: s["meta"]["versionId"] for s in await store.search([], 1000)} == versions


async def _ingest_one(store: Repository, path: Path, **options: Any) -> dict[str, Any]:
    report = await Ingest(store, **options).run([path])
    assert report.studies_created == 1, report.table()
    [study] = await store.search([], 10)
    ImagingStudy.model_validate(study)
    return study


@pytest.mark.parametrize(
    "missing",
    [
        {"PatientID": ""},
        {"PatientID": None, "PatientName": None},
        {"SeriesNumber": None},
        {"StudyDate": ""},
    ],
)
async def test_missing_values_still_make_a_valid_study(
    store: Repository, tmp_path: Path, missing: dict[str, Any]
) -> None:
    study = await _ingest_one(store, write(tmp_path, "a.dcm", **missing))
    if "StudyDate" in missing:
        assert "started" not in study
    if missing.get("PatientID") == "":
        assert study["subject"] == {"type": "Patient", "display": "Jane Doe"}


async def test_mapping(store: Repository, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.dcm",
        TimezoneOffsetFromUTC="+0100",
        AccessionNumber="ACC9",
        StudyDescription="CT chest",
        ReferringPhysicianName="House^Gregory^^Dr",
        SeriesDescription="Axial",
        BodyPartExamined="CHEST",
        Laterality="L",
        PerformingPhysicianName="Tech^Tom",
        SeriesDate="20240305",
        SeriesTime="101700.25",
        ContentLabel="AXIAL 1",
        IssuerOfPatientID="1.2.99",
    )
    study = await _ingest_one(store, path, endpoint="Endpoint/wado")
    series = study["series"][0]
    assert study["started"] == "2024-03-05T10:15:00+01:00"
    assert study["subject"] == {
        "type": "Patient",
        "display": "Jane Doe",
        "identifier": {"value": "MRN1", "system": "urn:oid:1.2.99"},
    }
    assert study["basedOn"][0]["identifier"]["value"] == "ACC9"
    assert study["referrer"] == {"display": "Dr Gregory House"}
    assert study["endpoint"] == [{"reference": "Endpoint/wado"}]
    assert series["started"] == "2024-03-05T10:17:00.25+01:00"
    assert series["bodySite"]["concept"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert series["laterality"]["coding"][0]["code"] == "7771000"
    assert series["performer"][0]["actor"] == {"display": "Tom Tech"}
    assert series["instance"][0]["sopClass"]["display"] == "CT Image Storage"
    assert series["instance"][0]["title"] == "AXIAL 1"


@pytest.mark.parametrize(
    ("zone", "started"), [(None, "2024-03-05"), ("-05:00", "2024-03-05T10:15:00-05:00")]
)
async def test_no_time_zone_means_a_date_only(
    store: Repository, tmp_path: Path, zone: str | None, started: str
) -> None:
    study = await _ingest_one(store, write(tmp_path, "z.dcm"), timezone=zone)
    assert study["started"] == started


async def test_writes_in_batches_and_merges_later_files(store: Repository, tmp_path: Path) -> None:
    for n in range(7):
        write(tmp_path, f"{n}.dcm", SOPInstanceUID=f"1.2.3.1.{n + 1}", InstanceNumber=n + 1)
    calls: list[str] = []
    for name in ("create", "add_series", "add_instances"):
        method = getattr(store, name)

        async def counted(*args: Any, _name: str = name, _method: Any = method) -> Any:
            calls.append(_name)
            return await _method(*args)

        setattr(store, name, counted)
    report = await Ingest(store, batch=3, flush_at=4).run([tmp_path])
    assert report.instances_added == 7
    assert len(calls) < 7  # not one write per file
    assert (report.studies_created, report.studies_updated) == (1, 1)  # two flushes
    write(tmp_path, "late.dcm", SOPInstanceUID="1.2.3.2.1", SeriesInstanceUID="1.2.3.2")
    report = await Ingest(store).run([tmp_path])
    assert (report.studies_updated, report.instances_added) == (1, 1)
    [study] = await store.search([], 10)
    assert study["numberOfInstances"] == 8


async def test_concurrent_ingests_make_one_study(store: Repository, tmp_path: Path) -> None:
    for n in range(5):
        write(tmp_path, f"{n}.dcm", SOPInstanceUID=f"1.2.3.1.{n + 1}")
    await asyncio.gather(*(Ingest(store).run([tmp_path]) for _ in range(4)))
    [study] = await store.search([], 10)
    assert study["numberOfInstances"] == 5


async def test_unusable_files_are_skipped_with_reasons(store: Repository, tmp_path: Path) -> None:
    write(tmp_path, "ok.dcm")
    write(tmp_path, "nouid.dcm", SOPInstanceUID=None)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # pydicom agrees
        write(tmp_path, "badui.dcm", SOPInstanceUID="1.02.3")
    (tmp_path / "notes.txt").write_text("not DICOM")
    report = await Ingest(store).run([tmp_path])
    assert report.skipped["no SOPInstanceUID"] == 1
    assert report.skipped["not a DICOM file"] == 1
    assert any("leading zero" in reason for reason in report.skipped)
    assert report.instances_added == 1


async def test_a_bare_dataset_without_the_file_header_is_an_instance(
    store: Repository, tmp_path: Path
) -> None:
    """Older archives write the dataset alone (no preamble, no "DICM", no file meta), as
    Orthanc accepts it; junk that happens to start like a data element is still not DICOM."""
    path = write(tmp_path, "with-header.dcm", SOPInstanceUID="1.2.3.1.1")
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = "1.2.3.1.2"
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare"
    ds.save_as(bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert bare.read_bytes()[:2] == b"\x08\x00"  # group 0008 first: no header
    (tmp_path / "junk.bin").write_bytes(b"\x08\x00\x05\x00" + bytes(range(256)) * 4)
    report = await Ingest(store).run([tmp_path])
    [study] = await store.search([], 10)
    assert {i["uid"] for i in study["series"][0]["instance"]} == {"1.2.3.1.1", "1.2.3.1.2"}
    assert dict(report.skipped) == {"not a DICOM file": 1}, report.skipped
