"""DICOM headers -> FHIR JSON, after R5's DICOM mapping. The only module that imports pydicom.
Headers only: files are read with `stop_before_pixels`, so pixel data is never loaded."""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from store.fhir.definitions import DICOM_SYSTEM, DICOM_UID_SYSTEM, dicom_modalities

SCT = "http://snomed.info/sct"
ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
PERFORMER = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRF"}
    ]
}
ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
# DICOM Laterality (0020,0060) -> DICOM CID 244 (SNOMED CT)
LATERALITY = {"R": ("24028007", "Right"), "L": ("7771000", "Left"), "B": ("51440002", "Bilateral")}
# BodyPartExamined defined terms (PS3.16 Annex L) whose CID 4031 name differs from the term.
_BODY_ALIASES = {
    "CSPINE": "CervicalSpine",
    "TSPINE": "ThoracicSpine",
    "LSPINE": "LumbarSpine",
    "LSSPINE": "LumboSacralSpine",
    "ABDOMENPELVIS": "AbdomenAndPelvis",
    "CHESTABDOMEN": "ChestAndAbdomen",
    "CHESTABDPELVIS": "ChestAbdomenAndPelvis",
    "HEADNECK": "HeadAndNeck",
    "NECKCHEST": "NeckAndChest",
    "WHOLEBODY": "EntireBody",
    "ELBOW": "ElbowJoint",
    "ANKLE": "AnkleJoint",
    "WRIST": "WristJoint",
    "TMJ": "TemporomandibularJoint",
    "ARM": "UpperArm",
    "LEG": "LowerLeg",
}
_BODY = {name.upper(): name for name in codes.cid4031.dir()}
# pydicom also logs each deviation it warns about; the ingest report says what matters.
logging.getLogger("pydicom").setLevel(logging.ERROR)
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")


class Skip(Exception):
    """Why a file does not become an instance."""


@dataclass
class Header:
    """One file's contribution: its study, series and instance as FHIR JSON fragments."""

    study_uid: str
    series_uid: str
    study: dict[str, Any]  # study-level elements, without series
    series: dict[str, Any]  # series-level elements, without instances
    instance: dict[str, Any]


def read(path: Path, *, timezone: str | None = None, endpoint: str | None = None) -> Header:
    """The header of one file; raises Skip with the reason when it is not an instance.
    `endpoint` (a literal reference, e.g. Endpoint/wado) goes on the study."""
    study_endpoint = {"reference": endpoint} if endpoint else None
    try:
        with warnings.catch_warnings():
            # Real archives are full of small deviations pydicom warns about; the ingest
            # reports what it skips, so those warnings would only be noise here.
            warnings.simplefilter("ignore")
            ds = _dataset(path)
            return _header(ds, timezone, study_endpoint, series_endpoint=False)
    except InvalidDicomError:
        raise Skip("not a DICOM file") from None
    except Skip:
        raise
    except Exception as error:  # any unreadable file is skipped with its error, not fatal
        raise Skip(f"unreadable: {type(error).__name__}: {error}") from None


def _dataset(path: Path) -> Any:
    """The file's dataset. A file without the DICOM file header (no preamble and "DICM": older
    archives and some modalities write the bare dataset, and PACS such as Orthanc accept it)
    is read as a bare dataset, and taken for DICOM only when that reading finds a Study
    Instance UID; anything else stays "not a DICOM file"."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        try:
            bare = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            found = str(bare.get("StudyInstanceUID", "") or "").strip()
        except Exception:  # what forced reading makes of bytes that are not a dataset
            found = ""
        if not found:
            raise
        return bare


def from_json(
    data: dict[str, Any], *, timezone: str | None = None, endpoint: dict[str, Any] | None = None
) -> Header:
    """The header of one instance given as a DICOM JSON dataset (PS3.18 F.2: what WADO-RS
    metadata and QIDO-RS answer), mapped exactly as a file is: pydicom's Dataset.from_json
    makes the same Dataset dcmread would, and the same `_header` maps it. `endpoint` (a
    Reference to the server the pixels are on) goes on the study and on its series. Raises
    Skip with the reason when the dataset is not a usable instance."""
    try:
        with warnings.catch_warnings():
            # Bulk data (pixels) comes as BulkDataURI, which is never fetched: pydicom warns
            # that it has no handler for it. Headers are all the mapping reads.
            warnings.simplefilter("ignore")
            ds = pydicom.Dataset.from_json(data, bulk_data_uri_handler=_no_bulk_data)
            return _header(ds, timezone, endpoint, series_endpoint=True)
    except Skip:
        raise
    except Exception as error:  # a malformed dataset is skipped with its error, not fatal
        raise Skip(f"unreadable: {type(error).__name__}: {error}") from None


def _no_bulk_data(tag: str, vr: str, uri: str) -> bytes:
    """Bulk data is never fetched (headers only, as files are read stop_before_pixels)."""
    return b""


def test_files() -> Path:
    """The DICOM files pydicom ships for its own tests: real-world variety for demos."""
    return Path(pydicom.__file__).parent / "data" / "test_files"


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or isinstance(value, bytes):
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _int(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and 0 <= number < 2**31 else None


def person(value: Any) -> str | None:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) as it reads: 'Dr John Doe'."""
    if not value or isinstance(value, bytes):
        return None
    parts = str(value).split("=")[0].split("^") + [""] * 5
    family, given, middle, prefix, suffix = (p.strip() for p in parts[:5])
    text = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    return text or None


def offset(value: str | None) -> str | None:
    """+HHMM or +HH:MM -> +HH:MM, or None when absent or malformed."""
    match = _OFFSET.fullmatch(value.strip()) if value else None
    return f"{match[1]}{match[2]}:{match[3]}" if match else None


def date_time(date: str | None, time: str | None, zone: str | None) -> str | None:
    """A FHIR dateTime from DICOM DA/TM: date only unless the time zone is known."""
    digits = re.sub(r"[.\-]", "", date or "")
    if not re.fullmatch(r"\d{8}", digits):
        return None
    day = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    clock = re.sub(":", "", time or "")
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?", clock)
    if zone is None or match is None:
        return day
    hh, mm, ss, frac = match[1], match[2] or "00", match[3] or "00", match[4] or ""
    return f"{day}T{hh}:{mm}:{ss}{frac}{zone}"


def _modality(code: str) -> dict[str, Any]:
    if code in dicom_modalities():
        return {"coding": [{"system": DICOM_SYSTEM, "code": code}]}
    return {"coding": [{"code": code}], "text": code}  # not CID 33: keep it, uncoded


def _body_site(value: str) -> dict[str, Any]:
    term = re.sub(r"[^A-Z]", "", value.upper())
    name = _BODY_ALIASES.get(term) or _BODY.get(term)
    if name is None:
        return {"concept": {"text": value}}
    code = getattr(codes.cid4031, name)
    return {
        "concept": {
            "coding": [{"system": SCT, "code": code.value, "display": code.meaning}],
            "text": value,
        }
    }


def _subject(ds: Any) -> dict[str, Any]:
    subject: dict[str, Any] = {"type": "Patient"}
    patient_id, name = _text(ds, "PatientID"), person(ds.get("PatientName"))
    if patient_id:
        identifier: dict[str, Any] = {"value": patient_id}
        issuer = _text(ds, "IssuerOfPatientID")
        if issuer and re.fullmatch(r"[0-2](\.(0|[1-9]\d*))+", issuer):
            identifier["system"] = f"urn:oid:{issuer}"
        elif issuer and ":" in issuer and " " not in issuer:
            identifier["system"] = issuer
        elif issuer:
            identifier["assigner"] = {"display": issuer}
        subject["identifier"] = identifier
    if name:
        subject["display"] = name
    if not patient_id and not name:
        subject["extension"] = [{"url": ABSENT, "valueCode": "unknown"}]
    return subject


def _header(
    ds: Any, timezone: str | None, endpoint: dict[str, Any] | None, *, series_endpoint: bool
) -> Header:
    uids = {k: _text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    for keyword, value in uids.items():
        if not value:
            raise Skip(f"no {keyword}")
    study_uid, series_uid, sop_uid = (str(v) for v in uids.values())
    modality = _text(ds, "Modality")
    if not modality:
        raise Skip("no Modality (ImagingStudy.series.modality is required)")
    zone = offset(_text(ds, "TimezoneOffsetFromUTC")) or timezone
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}],
        "subject": _subject(ds),
    }
    study_optional = {
        "started": date_time(_text(ds, "StudyDate"), _text(ds, "StudyTime"), zone),
        "description": _text(ds, "StudyDescription"),
        "referrer": {"display": n} if (n := person(ds.get("ReferringPhysicianName"))) else None,
        "basedOn": [{"type": "ServiceRequest", "identifier": {"type": ACSN, "value": a}}]
        if (a := _text(ds, "AccessionNumber"))
        else None,
        "endpoint": [dict(endpoint)] if endpoint else None,
    }
    study.update({k: v for k, v in study_optional.items() if v is not None})
    series: dict[str, Any] = {"uid": series_uid, "modality": _modality(modality)}
    performers = [person(p) for p in _values(ds.get("PerformingPhysicianName"))]
    laterality = LATERALITY.get(_text(ds, "Laterality") or "")
    series_optional = {
        "number": _int(ds, "SeriesNumber"),
        "description": _text(ds, "SeriesDescription"),
        "bodySite": _body_site(b) if (b := _text(ds, "BodyPartExamined")) else None,
        "laterality": {"coding": [{"system": SCT, "code": laterality[0], "display": laterality[1]}]}
        if laterality
        else None,
        "started": date_time(_text(ds, "SeriesDate"), _text(ds, "SeriesTime"), zone),
        "performer": [{"function": PERFORMER, "actor": {"display": p}} for p in performers if p]
        or None,
        "endpoint": [dict(endpoint)] if endpoint and series_endpoint else None,
    }
    series.update({k: v for k, v in series_optional.items() if v is not None})
    sop_class = _text(ds, "SOPClassUID")
    if not sop_class:
        raise Skip("no SOPClassUID (ImagingStudy.series.instance.sopClass is required)")
    coding = {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}
    if (name := UID(sop_class).name) != sop_class:
        coding["display"] = name
    instance: dict[str, Any] = {"uid": sop_uid, "sopClass": coding}
    instance_optional = {
        "number": _int(ds, "InstanceNumber"),
        "title": _text(ds, "ContentLabel") or _text(ds, "DocumentTitle"),
    }
    instance.update({k: v for k, v in instance_optional.items() if v is not None})
    return Header(study_uid, series_uid, study, series, instance)


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, MultiValue) else [value]
