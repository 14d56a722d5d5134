"""Three studies that between them give every search parameter something to find."""

from __future__ import annotations

from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
CT_IMAGE = "urn:oid:1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "urn:oid:1.2.840.10008.5.1.4.1.1.4"


def _series(
    uid: str,
    modality: str,
    body: str,
    structure: str,
    endpoint: str,
    actor: str,
    instance: str,
    sop: dict[str, str],
    actor_identifier: dict[str, str],
) -> dict[str, Any]:
    return {
        "uid": uid,
        "modality": {"coding": [{"system": DCM, "code": modality}]},
        "bodySite": {
            "concept": {"coding": [{"system": SCT, "code": body}]},
            "reference": {"reference": structure},
        },
        "endpoint": [{"reference": endpoint}],
        "performer": [{"actor": {"reference": actor, "identifier": actor_identifier}}],
        "instance": [{"uid": instance, "sopClass": sop}],
    }


A = {
    "id": "a",
    "status": "available",
    "identifier": [
        {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
        {"system": "urn:acc", "value": "ACC1"},
    ],
    "subject": {"reference": "Patient/p1", "identifier": {"system": "urn:mrn", "value": "MRN1"}},
    "encounter": {"reference": "Encounter/e1"},
    "started": "2024-03-05T10:00:00+01:00",
    "basedOn": [
        {"reference": "ServiceRequest/sr1", "identifier": {"system": "urn:acc", "value": "ACC1"}}
    ],
    "referrer": {
        "reference": "Practitioner/r1",
        "identifier": {"system": "urn:npi", "value": "N1"},
    },
    "endpoint": [{"reference": "Endpoint/ep1"}],
    "reason": [
        {"concept": {"coding": [{"system": SCT, "code": "357009"}]}},
        {"reference": {"reference": "Condition/c1"}},
    ],
    "series": [
        _series(
            "1.2.3.1",
            "CT",
            "T-1",
            "BodyStructure/bs1",
            "Endpoint/ep-a",
            "Practitioner/tech1",
            "1.2.3.1.1",
            {"system": "urn:ietf:rfc:3986", "code": CT_IMAGE},
            {"system": "urn:staff", "value": "T1"},
        )
    ],
}
B = {
    "id": "b",
    "status": "registered",
    "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.4"}],
    "subject": {"reference": "Patient/p2", "identifier": {"value": "MRN2"}},
    "encounter": {"reference": "Encounter/e2"},
    "started": "2023",
    "basedOn": [
        {"reference": "ServiceRequest/sr2"},
        {"type": "ServiceRequest", "identifier": {"value": "ACC2"}},
    ],
    "referrer": {
        "reference": "PractitionerRole/r2",
        "identifier": {"system": "urn:npi", "value": "N2"},
    },
    "reason": [{"reference": {"reference": "Observation/o1"}}],
    "series": [
        _series(
            "1.2.4.1",
            "MR",
            "T-2",
            "BodyStructure/bs2",
            "Endpoint/ep2",
            "Organization/o2",
            "1.2.4.1.1",
            {"code": MR_IMAGE},
            {"value": "O2"},
        )
    ],
}
# C's subject is a Group carrying an MRN-like identifier: subject_identifier finds it,
# patient_identifier does not.
C = {
    "id": "c",
    "status": "cancelled",
    "subject": {"reference": "Group/g1", "identifier": {"system": "urn:mrn", "value": "MRN3"}},
}
STUDIES = [A, B, C]

# parameter, a value matching only A, one matching only B, one matching none, a malformed one
TABLE = [
    ("based-on", "ServiceRequest/sr1", "sr2", "ServiceRequest/zz", "Patient/1"),
    ("body-site", f"{SCT}|T-1", "T-2", "T-9", "a|b|c"),
    ("body-structure", "BodyStructure/bs1", "bs2", "BodyStructure/zz", "Patient/1"),
    ("dicom-class", f"urn:ietf:rfc:3986|{CT_IMAGE}", f"|{MR_IMAGE}", "urn:oid:9", "|"),
    ("encounter", "Encounter/e1", "e2", "Encounter/e9", "Patient/p1"),
    ("endpoint", "Endpoint/ep1", "Endpoint/ep2", "Endpoint/x", "Encounter/x"),
    (
        "identifier",
        "urn:dicom:uid|urn:oid:1.2.3",
        "urn:oid:1.2.4",
        "urn:acc|urn:oid:1.2.3",
        "a|b|c",
    ),
    ("instance", "1.2.3.1.1", "|1.2.4.1.1", "9.9", "a|b|c"),
    ("modality", f"{DCM}|CT", "MR", "US", "|"),
    ("patient", "p1", "Patient/p2", "p9", "Device/d1"),
    ("performer", "Practitioner/tech1", "Organization/o2", "Practitioner/x", "Encounter/e1"),
    ("reason", f"{SCT}|357009", "Observation/o1", "Condition/zz", "Patient/1"),
    ("referrer", "Practitioner/r1", "PractitionerRole/r2", "r9", "Patient/p1"),
    ("series", "1.2.3.1", "1.2.4.1", "1.2.9", "a|b|c"),
    ("started", "2024-03-05", "lt2024", "2022", "2024-13"),
    ("status", "available", "http://hl7.org/fhir/imagingstudy-status|registered", "unknown", "|"),
    ("subject", "Patient/p1", "p2", "Device/d9", "Encounter/e1"),
    ("_id", "a", "b", "z", "a|b|c"),
]

# The same columns for the `:identifier` searches (plain arguments only: `_filter` has no
# modifiers).
IDENTIFIER_TABLE = [
    ("based-on:identifier", "urn:acc|ACC1", "ACC2", "urn:acc|ACC2", "a|b|c"),
    ("patient:identifier", "urn:mrn|MRN1", "|MRN2", "urn:mrn|MRN3", "a|b|c"),
    ("performer:identifier", "urn:staff|T1", "|O2", "urn:staff|O2", "|"),
    ("referrer:identifier", "urn:npi|N1", "N2", "|N1", "a|b|c"),
    ("subject:identifier", "MRN1", "|MRN2", "urn:other|MRN1", "a|b|c"),
]
