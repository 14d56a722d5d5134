"""The elements a patient-confined writer cannot vouch for (api/access/vouched.py): set anew
or changed they are named; kept as stored, in any key order, they pass."""

from __future__ import annotations

from typing import Any

from api.access.vouched import unvouched
from store.interop import demo


def _performed_by(identifier: dict[str, Any]) -> dict[str, Any]:
    study = demo.study("v", 2, 1)
    study["series"][1]["performer"] = [
        {"actor": {"type": "Practitioner", "identifier": identifier}}
    ]
    return study


def test_a_performer_identifier_is_named_where_it_stands() -> None:
    study = _performed_by({"system": "urn:npi", "value": "P2"})
    assert unvouched(study, None) == "series[1].performer[0].actor.identifier"
    assert unvouched(study, demo.study("v", 2, 1)) == "series[1].performer[0].actor.identifier"


def test_what_the_stored_version_holds_passes_in_any_key_order() -> None:
    stored = _performed_by({"system": "urn:npi", "value": "P2"})
    stored["subject"] = {"reference": "Patient/p", "identifier": {"system": "s", "value": "M"}}
    sent = _performed_by({"value": "P2", "system": "urn:npi"})
    sent["subject"] = {"identifier": {"value": "M", "system": "s"}, "reference": "Patient/p"}
    assert unvouched(sent, stored) is None
    sent["subject"]["identifier"]["value"] = "M-other"
    assert unvouched(sent, stored) == "subject.identifier"


def test_a_study_identifier_is_an_accession_number_only_when_typed_so() -> None:
    study = demo.study("v", 1, 1)
    assert unvouched(study, None) is None  # its Study Instance UID
    study["identifier"].append({"type": {"coding": [{"code": "ACSN"}]}, "value": "A1"})
    assert unvouched(study, None) == "identifier[1]"
