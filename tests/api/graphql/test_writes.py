"""Writes through GraphQL: the error contract (code + OperationOutcome naming the element),
the workflow mutations, optimistic concurrency, and that a refused write changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error, expressions
from tests.support.violations import BAD_UIDS, REQUIRED, WRONG_TARGETS, with_reference, xr

FULL_STATE = """query($id: ID!) { ImagingStudy(id: $id) { meta { versionId } status
  numberOfSeries numberOfInstances modality { coding { code } }
  series { uid numberOfInstances instance { uid number title } } } }"""
ADD_SERIES = """mutation($id: ID!, $s: [ImagingStudySeriesInput!]!, $v: String) {
  ImagingStudyAddSeries(id: $id, series: $s, versionId: $v) { numberOfSeries } }"""
ADD = """mutation($id: ID!, $s: String!, $i: [ImagingStudySeriesInstanceInput!]!, $v: String) {
  ImagingStudyAddInstances(id: $id, seriesUid: $s, instances: $i, versionId: $v) {
  numberOfInstances meta { versionId } } }"""
REMOVE_SERIES = """mutation($id: ID!, $u: [String!]!) {
  ImagingStudyRemoveSeries(id: $id, uids: $u) { numberOfSeries numberOfInstances
  modality { coding { code } } } }"""
REMOVE = """mutation($id: ID!, $s: String!, $u: [String!]!) {
  ImagingStudyRemoveInstances(id: $id, seriesUid: $s, uids: $u) { numberOfInstances
  series { numberOfInstances } } }"""


async def _refused_create(gql: Gql, resource: dict[str, Any]) -> list[str]:
    body = await gql(CREATE, res=resource)
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await gql(FULL_STATE, id=resource["id"]))["data"]["ImagingStudy"] is None
    return expressions(body)


@pytest.mark.parametrize(("edit", "expression"), REQUIRED)
async def test_missing_required_element(
    gql: Gql, edit: Callable[[Any], None], expression: str
) -> None:
    resource = xr()
    edit(resource)
    assert await _refused_create(gql, resource) == [expression]


@pytest.mark.parametrize(("uid", "rule"), BAD_UIDS)
async def test_bad_uid(gql: Gql, uid: str, rule: str) -> None:
    resource = xr()
    resource["series"][0]["instance"][0]["uid"] = uid
    assert await _refused_create(gql, resource) == ["ImagingStudy.series[0].instance[0].uid"]


@pytest.mark.parametrize(("path", "reference", "expression"), WRONG_TARGETS)
async def test_wrong_reference_target(
    gql: Gql, path: tuple[Any, ...], reference: str, expression: str
) -> None:
    resource = with_reference(path, reference)
    assert await _refused_create(gql, resource) == [expression]


async def test_bad_status_and_unknown_element(gql: Gql) -> None:
    assert await _refused_create(gql, {**xr(), "status": "done"}) == ["ImagingStudy.status"]
    resource = xr()
    resource["series"][0]["instance"][1]["frames"] = 3
    assert await _refused_create(gql, resource) == ["ImagingStudy.series[0].instance[1].frames"]
    body = await gql(
        'mutation { ImagingStudyCreate(res: {status: "registered", frames: 1}) { id } }'
    )
    assert expressions(body) == ["ImagingStudy.frames"]


async def test_all_violations_of_a_write_come_together(gql: Gql) -> None:
    resource = xr()
    del resource["subject"]
    resource["series"][0]["uid"] = "01.2"
    resource["started"] = "2024-01-01T10:00:00"
    assert sorted(await _refused_create(gql, resource)) == [
        "ImagingStudy.series[0].uid",
        "ImagingStudy.started",
        "ImagingStudy.subject",
    ]


async def test_add_series_refuses_a_uid_already_in_the_study(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("as", 1, 1))
    before = await gql(FULL_STATE, id="as")
    body = await gql(ADD_SERIES, id="as", s=[demo.series("as", 2, 1), demo.series("as", 1, 0)])
    assert expressions(body) == ["ImagingStudy.series[2].uid"]
    assert await gql(FULL_STATE, id="as") == before
    body = await gql(ADD_SERIES, id="as", s=[demo.series("as", 2, 2, "MR")], v="1")
    assert body["data"]["ImagingStudyAddSeries"]["numberOfSeries"] == 2
    state = (await gql(FULL_STATE, id="as"))["data"]["ImagingStudy"]
    assert state["numberOfInstances"] == 3
    assert [m["coding"][0]["code"] for m in state["modality"]] == ["CT", "MR"]


async def test_add_instances_retry_is_a_no_op_and_conflicts_are_refused(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("ai", 2, 2))
    series_uid = demo.uid("ai", 1)
    retry = await gql(ADD, id="ai", s=series_uid, i=[demo.instance("ai", 1, 1)])
    assert retry["data"]["ImagingStudyAddInstances"]["meta"]["versionId"] == "1"
    before = await gql(FULL_STATE, id="ai")
    changed = {**demo.instance("ai", 1, 2), "title": "different"}
    body = await gql(ADD, id="ai", s=series_uid, i=[demo.instance("ai", 1, 3), changed])
    assert "different content" in error(body)["message"]
    body = await gql(ADD, id="ai", s=series_uid, i=[demo.instance("ai", 2, 1)])
    assert "another series" in error(body)["message"]
    body = await gql(ADD, id="ai", s="1.2.3", i=[demo.instance("ai", 1, 9)])
    assert "no series with UID 1.2.3" in error(body)["message"]
    assert await gql(FULL_STATE, id="ai") == before


async def test_batches_over_ten_thousand_are_refused(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("cap", 1, 0))
    batch = [demo.instance("cap", 1, n) for n in range(1, 10_002)]
    body = await gql(ADD, id="cap", s=demo.uid("cap", 1), i=batch)
    assert expressions(body) == ["instances"]


async def test_study_size_limit(gql: Gql, store: Repository) -> None:
    store.max_instances = 3
    await gql(CREATE, res=demo.study("lim", 1, 3))
    body = await gql(ADD, id="lim", s=demo.uid("lim", 1), i=[demo.instance("lim", 1, 4)])
    assert "at most 3 instances" in error(body)["message"]


async def test_remove_series_and_instances_update_the_derived_fields(gql: Gql) -> None:
    resource = demo.study("rm", 2, 3)
    resource["series"][1]["modality"]["coding"][0]["code"] = "MR"
    await gql(CREATE, res=resource)
    body = await gql(REMOVE, id="rm", s=demo.uid("rm", 1), u=[demo.uid("rm", 1, 2)])
    assert body["data"]["ImagingStudyRemoveInstances"] == {
        "numberOfInstances": 5,
        "series": [{"numberOfInstances": 2}, {"numberOfInstances": 3}],
    }
    body = await gql(REMOVE_SERIES, id="rm", u=[demo.uid("rm", 2)])
    assert body["data"]["ImagingStudyRemoveSeries"] == {
        "numberOfSeries": 1,
        "numberOfInstances": 2,
        "modality": [{"coding": [{"code": "CT"}]}],
    }
    body = await gql(REMOVE_SERIES, id="rm", u=["9.9"])
    assert "no series with UID 9.9" in error(body)["message"]


async def test_an_available_study_keeps_at_least_one_instance(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("keep", 1, 1))
    body = await gql(REMOVE, id="keep", s=demo.uid("keep", 1), u=[demo.uid("keep", 1, 1)])
    assert error(body)["extensions"]["code"] == "INVALID_STATUS_TRANSITION"


async def test_writes_to_a_missing_study_are_not_found(gql: Gql) -> None:
    body = await gql(ADD, id="ghost", s="1.2", i=[demo.instance("g", 1, 1)])
    assert error(body)["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.slow
async def test_hundred_unversioned_instance_adds_over_graphql_all_land(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("h", 1, 0))
    bodies = await asyncio.gather(
        *(gql(ADD, id="h", s=demo.uid("h", 1), i=[demo.instance("h", 1, n)]) for n in range(1, 101))
    )
    assert [b for b in bodies if "errors" in b] == []
    state = (await gql(FULL_STATE, id="h"))["data"]["ImagingStudy"]
    assert sorted(i["number"] for i in state["series"][0]["instance"]) == list(range(1, 101))
    assert state["numberOfInstances"] == 100


async def test_twenty_writers_with_one_version_over_graphql(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("v", 1, 0))
    bodies = await asyncio.gather(
        *(
            gql(ADD, id="v", s=demo.uid("v", 1), i=[demo.instance("v", 1, n)], v="1")
            for n in range(1, 21)
        )
    )
    codes = [b["errors"][0]["extensions"]["code"] for b in bodies if "errors" in b]
    assert codes == ["VERSION_CONFLICT"] * 19
    state = (await gql(FULL_STATE, id="v"))["data"]["ImagingStudy"]
    assert state["meta"]["versionId"] == "2"
    assert state["numberOfInstances"] == 1


async def test_conditional_create_over_graphql(gql: Gql) -> None:
    condition = f"identifier=urn:dicom:uid|urn:oid:{demo.uid('ine')}"
    bodies = await asyncio.gather(
        *(
            gql(CREATE, res={**demo.study("ine", 1, 1), "id": f"i{n}"}, ine=condition)
            for n in range(50)
        )
    )
    assert len({b["data"]["ImagingStudyCreate"]["id"] for b in bodies}) == 1
    body = await gql(CREATE, res=demo.study("bad", 1, 1), ine="nonsense=1")
    assert expressions(body) == ["ifNoneExist"]


async def test_unexpected_errors_are_masked(
    gql: Gql, store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_: str) -> None:
        raise RuntimeError("planted-secret-4711")

    monkeypatch.setattr(store, "get", broken)
    body = await gql('{ ImagingStudy(id: "x") { id } }')
    assert error(body)["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "planted-secret" not in str(body)
