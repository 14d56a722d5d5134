"""Every cell of the 5x5 status table (README "Status lifecycle"), through GraphQL: allowed moves
change the status and bump the version; refused ones change nothing."""

from __future__ import annotations

import pytest

from store.fhir.lifecycle import TRANSITIONS
from store.interop import demo
from tests.support.graphql import CREATE, GET, STATUS, Gql, error

STATUSES = list(TRANSITIONS)


async def _study_in(gql: Gql, status: str, instances: int = 1) -> str:
    """A study brought to `status` the way a client would: create, then move it."""
    resource = demo.study(f"s-{status}", 1, instances)
    first = "unknown" if status in ("unknown", "entered-in-error") else status
    if status == "available" and not instances:
        first = "registered"
    resource["status"] = first
    body = await gql(CREATE, res=resource)
    assert "errors" not in body, body
    if status != first:
        body = await gql(STATUS, id=resource["id"], status=status)
        assert "errors" not in body, body
    return resource["id"]


@pytest.mark.parametrize("before", STATUSES)
@pytest.mark.parametrize("after", STATUSES)
async def test_status_table_cell(gql: Gql, before: str, after: str) -> None:
    study_id = await _study_in(gql, before)
    version = (await gql(GET, id=study_id))["data"]["ImagingStudy"]["meta"]["versionId"]
    body = await gql(STATUS, id=study_id, status=after, v=version)
    stored = (await gql(GET, id=study_id))["data"]["ImagingStudy"]
    if before == after:
        assert body["data"]["ImagingStudySetStatus"]["status"] == after
        assert stored["meta"]["versionId"] == version  # a no-op does not bump the version
    elif after in TRANSITIONS[before]:
        assert body["data"]["ImagingStudySetStatus"]["status"] == after
        assert stored["meta"]["versionId"] == str(int(version) + 1)
    else:
        assert error(body)["extensions"]["code"] == "INVALID_STATUS_TRANSITION"
        assert stored == {"id": study_id, "status": before, "meta": {"versionId": version}}


@pytest.mark.parametrize("before", ["registered", "unknown"])
async def test_available_needs_an_instance(gql: Gql, before: str) -> None:
    study_id = await _study_in(gql, before, instances=0)
    body = await gql(STATUS, id=study_id, status="available")
    assert "at least one instance" in error(body)["message"]
    assert (await gql(GET, id=study_id))["data"]["ImagingStudy"]["status"] == before


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("registered", True),
        ("available", True),
        ("cancelled", True),
        ("unknown", True),
        ("entered-in-error", False),
    ],
)
async def test_create_statuses(gql: Gql, status: str, allowed: bool) -> None:
    body = await gql(CREATE, res={**demo.study("new", 1, 1), "status": status})
    if allowed:
        assert body["data"]["ImagingStudyCreate"]["status"] == status
    else:
        # Nothing transitions on a create: the status is bad input, and the rule is named.
        assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
        assert error(body)["message"] == (
            "ImagingStudy.status: a study cannot be created as 'entered-in-error'; create it "
            "as one of available, cancelled, registered, unknown"
        )
        assert (await gql(GET, id="new"))["data"]["ImagingStudy"] is None


async def test_available_create_without_instances_is_refused(gql: Gql) -> None:
    body = await gql(CREATE, res={**demo.study("empty", 1, 0), "status": "available"})
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["message"] == (
        "ImagingStudy.status: a study created as 'available' must list at least one instance; "
        "create it as 'registered' and set 'available' once it has instances"
    )
    assert error(body)["extensions"]["resource"]["issue"][0]["code"] == "invalid"
    assert (await gql(GET, id="empty"))["data"]["ImagingStudy"] is None


UPDATE = """mutation($id: ID!, $res: ImagingStudyInput!) {
  ImagingStudyUpdate(id: $id, res: $res) { status } }"""
ADD_SERIES = """mutation($id: ID!, $s: [ImagingStudySeriesInput!]!) {
  ImagingStudyAddSeries(id: $id, series: $s) { numberOfSeries } }"""


async def test_full_update_follows_the_table(gql: Gql) -> None:
    study_id = await _study_in(gql, "available")
    body = await gql(
        UPDATE, id=study_id, res={**demo.study(study_id, 1, 1), "status": "registered"}
    )
    assert error(body)["extensions"]["code"] == "INVALID_STATUS_TRANSITION"
    body = await gql(UPDATE, id=study_id, res={**demo.study(study_id, 1, 1), "status": "cancelled"})
    assert body["data"]["ImagingStudyUpdate"]["status"] == "cancelled"


async def test_entered_in_error_is_read_only(gql: Gql) -> None:
    study_id = await _study_in(gql, "entered-in-error")
    resource = {
        **demo.study(study_id, 1, 1),
        "status": "entered-in-error",
        "description": "changed",
    }
    body = await gql(UPDATE, id=study_id, res=resource)
    assert "read-only" in error(body)["message"]
    body = await gql(ADD_SERIES, id=study_id, s=[demo.series(study_id, 2, 1)])
    assert error(body)["extensions"]["code"] == "INVALID_STATUS_TRANSITION"


async def test_cancelled_takes_no_new_series_or_instances(gql: Gql) -> None:
    study_id = await _study_in(gql, "cancelled")
    body = await gql(ADD_SERIES, id=study_id, s=[demo.series(study_id, 2, 1)])
    assert "cancelled" in error(body)["message"]
    grown = demo.study(study_id, 2, 1)
    body = await gql(UPDATE, id=study_id, res={**grown, "status": "cancelled"})
    assert "cancelled" in error(body)["message"]
    same = {**demo.study(study_id, 1, 1), "status": "cancelled", "description": "aborted"}
    assert "errors" not in await gql(UPDATE, id=study_id, res=same)
