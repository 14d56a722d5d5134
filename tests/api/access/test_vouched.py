"""The elements a patient-confined writer cannot vouch for (api/access/vouched.py): set anew
or changed they are named; kept as stored, in any key order, they pass."""

from __future__ import annotations

from typing import Any

import httpx

from api.access.vouched import unvouched
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import call, codes
from tests.support.tokens import study, token

ADD_SERIES = """mutation($id: ID!, $s: [ImagingStudySeriesInput!]!) {
  ImagingStudyAddSeries(id: $id, series: $s) { id } }"""


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


def test_only_the_study_instance_uid_may_be_set_among_identifiers() -> None:
    study = demo.study("v", 1, 1)
    assert unvouched(study, None) is None  # its Study Instance UID
    for accession in (
        {"type": {"coding": [{"code": "ACSN"}]}, "value": "A1"},
        {"type": {"text": "ACSN"}, "value": "A1"},
        {"value": "A1"},
    ):
        assert unvouched({**study, "identifier": [*study["identifier"], accession]}, None) == (
            "identifier[1]"
        )


async def test_a_confined_add_series_cannot_name_a_performer(
    client: httpx.AsyncClient, store: Repository
) -> None:
    """AddSeries writes series too: a performer's identifier in a new series is refused to a
    patient-confined token as in a create (found black-box: it was not checked there)."""
    await store.create(study("own", "p1"))
    series = demo.series("own", 2, 1)
    series["performer"] = [{"actor": {"type": "Practitioner", "identifier": {"value": "9"}}}]
    bearer = token("patient/ImagingStudy.cruds", patient="p1")
    body = await call(client, bearer, ADD_SERIES, id="own", s=[series])
    assert codes(body) == {"FORBIDDEN"}
    assert body["errors"][0]["extensions"]["resource"]["issue"][0]["expression"] == [
        "ImagingStudy.series[0].performer[0].actor.identifier"
    ]
    assert len((await store.get("own"))["series"]) == 1
    del series["performer"]
    assert "errors" not in await call(client, bearer, ADD_SERIES, id="own", s=[series])
