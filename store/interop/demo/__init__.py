"""Demo and test data: the two official R5 examples and generated studies with deterministic
DICOM UIDs (2.25.<integer from a name-based UUID>, PS3.5 B.2), so every run makes the same ones."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from store.fhir import Study

HERE = Path(__file__).parent
EXAMPLES = ("ImagingStudy-example.json", "ImagingStudy-example-xr.json")
CT_IMAGE_STORAGE = "urn:oid:1.2.840.10008.5.1.4.1.1.2"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def example(name: str) -> Study:
    """One official R5 example as FHIR JSON."""
    study: Study = json.loads((HERE / name).read_text())
    return study


def uid(*parts: object) -> str:
    """A deterministic DICOM UID for a name."""
    name = "/".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'imaging-demo:' + name).int}"


def instance(study: str, series: int, number: int) -> dict[str, Any]:
    return {
        "uid": uid(study, series, number),
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": CT_IMAGE_STORAGE},
        "number": number,
    }


def series(study: str, number: int, instances: int, modality: str = "CT") -> dict[str, Any]:
    item: dict[str, Any] = {
        "uid": uid(study, number),
        "number": number,
        "modality": {"coding": [{"system": DCM, "code": modality}]},
        "description": f"Demo series {number}",
        "performer": [{"actor": {"reference": "Practitioner/demo-technologist"}}],
    }
    if instances:
        item["instance"] = [instance(study, number, n) for n in range(1, instances + 1)]
    return item


def study(
    name: str,
    n_series: int,
    n_instances: int,
    *,
    patient: str = "demo",
    started: str = "2024-03-05T10:00:00+01:00",
    modality: str = "CT",
) -> dict[str, Any]:
    """A generated study of `n_series` x `n_instances`, the same every time for `name`."""
    return {
        "resourceType": "ImagingStudy",
        "id": name,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid(name)}"}],
        "status": "available" if n_series and n_instances else "registered",
        "subject": {"reference": f"Patient/{patient}"},
        "started": started,
        "description": f"Demo {modality} study {name}",
        "series": [series(name, s, n_instances, modality) for s in range(1, n_series + 1)],
    }


async def seed(repo: Any) -> list[str]:
    """Loads the examples, a 3 x 200 CT study and the studies in pydicom's own test files;
    re-running creates nothing new."""
    from store.interop.bundle import study_uid_condition
    from store.interop.dicom import test_files
    from store.interop.ingest import Ingest

    ids = []
    for resource in [*(example(n) for n in EXAMPLES), study("demo-ct", 3, 200)]:
        created, _ = await repo.create(resource, study_uid_condition(resource))
        ids.append(created["id"])
    await Ingest(repo).run([test_files()])
    return ids
