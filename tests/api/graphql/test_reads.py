"""Reads: the official examples round-trip through GraphQL input and output; nested paging;
a 10,000-instance study built in batches; lists and history."""

from __future__ import annotations

import copy

import pytest

from store.interop import demo
from tests.support.graphql import CREATE, Gql, error, prune, selection

FULL = f"query($id: ID!) {{ ImagingStudy(id: $id) {{ {selection('ImagingStudy')} }} }}"
ADD = """mutation($id: ID!, $s: String!, $i: [ImagingStudySeriesInstanceInput!]!) {
  ImagingStudyAddInstances(id: $id, seriesUid: $s, instances: $i) { numberOfInstances } }"""
LIST = """query($patient: [String!], $status: [String!], $identifier: [String!], $c: Int,
             $o: Int) {
  ImagingStudyList(patient: $patient, status: $status, identifier: $identifier, _count: $c,
                   _offset: $o) { id } }"""


@pytest.mark.parametrize("name", demo.EXAMPLES)
async def test_official_example_round_trips(gql: Gql, name: str) -> None:
    source = demo.example(name)
    created = await gql(CREATE, res=source)
    assert "errors" not in created, created
    read = prune((await gql(FULL, id=source["id"]))["data"]["ImagingStudy"])
    fhir = read.pop("fhirJson")
    assert list(fhir)[:3] == ["resourceType", "id", "meta"]
    assert read.pop("meta") == fhir.pop("meta")
    if "modality" not in source:  # derived from the series when absent
        assert read.pop("modality") == fhir.pop("modality") == [source["series"][0]["modality"]]
    assert read == source
    assert fhir == source


async def test_missing_study_is_null_not_an_error(gql: Gql) -> None:
    assert await gql(FULL, id="nope") == {"data": {"ImagingStudy": None}}


async def test_derived_counts_are_filled_in(gql: Gql) -> None:
    resource = demo.study("derived", 2, 3, modality="MR")
    assert "errors" not in await gql(CREATE, res=resource)
    body = await gql("""query { ImagingStudy(id: "derived") { numberOfSeries numberOfInstances
        modality { coding { code } } series { numberOfInstances } } }""")
    assert body["data"]["ImagingStudy"] == {
        "numberOfSeries": 2,
        "numberOfInstances": 6,
        "modality": [{"coding": [{"code": "MR"}]}],
        "series": [{"numberOfInstances": 3}, {"numberOfInstances": 3}],
    }


async def test_nested_filters_and_paging(gql: Gql) -> None:
    resource = demo.study("nested", 3, 5)
    resource["series"][1]["modality"]["coding"][0]["code"] = "MR"
    await gql(CREATE, res=resource)
    body = await gql(
        """query($u: String) { ImagingStudy(id: "nested") {
        mr: series(modality: "MR") { number }
        page: series(_count: 1, _offset: 2) { number instance(_count: 2, _offset: 3) { number } }
        one: series(uid: $u) { number instance(uid: $i) { number } } } }""".replace(
            "$i", f'"{demo.uid("nested", 1, 4)}"'
        ),
        u=demo.uid("nested", 1),
    )
    study = body["data"]["ImagingStudy"]
    assert study["mr"] == [{"number": 2}]
    assert study["page"] == [{"number": 3, "instance": [{"number": 4}, {"number": 5}]}]
    assert study["one"] == [{"number": 1, "instance": [{"number": 4}]}]


async def test_ten_thousand_instances_in_batches_read_whole_and_paged(gql: Gql) -> None:
    await gql(CREATE, res=demo.study("big", 1, 0))
    series_uid = demo.uid("big", 1)
    for start in range(0, 10_000, 2_500):
        batch = [demo.instance("big", 1, n) for n in range(start + 1, start + 2_501)]
        body = await gql(ADD, id="big", s=series_uid, i=batch)
        assert body["data"]["ImagingStudyAddInstances"]["numberOfInstances"] == start + 2_500
    whole = await gql(
        '{ ImagingStudy(id: "big") { numberOfInstances series { instance { uid number } } } }'
    )
    instances = whole["data"]["ImagingStudy"]["series"][0]["instance"]
    assert whole["data"]["ImagingStudy"]["numberOfInstances"] == 10_000
    assert [i["number"] for i in instances] == list(range(1, 10_001))
    assert len({i["uid"] for i in instances}) == 10_000
    page = await gql(
        '{ ImagingStudy(id: "big") { series { instance(_count: 500, _offset: 9800) { number } } } }'
    )
    numbers = [i["number"] for i in page["data"]["ImagingStudy"]["series"][0]["instance"]]
    assert numbers == list(range(9_801, 10_001))


async def test_list_filters_pages_and_orders_newest_first(gql: Gql) -> None:
    for n, started in enumerate(["2021-01-01", "2023-06-01", "2022-03-01"]):
        resource = demo.study(f"l{n}", 1, 1, patient="p1" if n < 2 else "p2", started=started)
        await gql(CREATE, res=resource)
    ids = lambda body: [s["id"] for s in body["data"]["ImagingStudyList"]]  # noqa: E731
    assert ids(await gql(LIST)) == ["l1", "l2", "l0"]
    assert ids(await gql(LIST, patient="p1")) == ["l1", "l0"]
    assert ids(await gql(LIST, patient="Patient/p2")) == ["l2"]
    assert ids(await gql(LIST, c=1, o=1)) == ["l2"]
    assert ids(await gql(LIST, status=["registered", "available"], c=2)) == ["l1", "l2"]
    uid = f"urn:dicom:uid|urn:oid:{demo.uid('l2')}"
    assert ids(await gql(LIST, identifier=uid)) == ["l2"]


@pytest.mark.parametrize(
    ("count", "offset", "argument"),
    [(0, None, "_count"), (1001, None, "_count"), (5, -1, "_offset")],
)
async def test_bad_list_paging_is_bad_user_input(
    gql: Gql, count: int, offset: int | None, argument: str
) -> None:
    body = await gql(LIST, c=count, o=offset)
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == [argument]


async def test_history_lists_every_version_newest_first(gql: Gql) -> None:
    resource = demo.study("hist", 1, 1)
    await gql(CREATE, res=resource)
    changed = copy.deepcopy(resource)
    changed["description"] = "second"
    await gql(
        """mutation($res: ImagingStudyInput!) { ImagingStudyUpdate(id: "hist", res: $res)
              { id } }""",
        res=changed,
    )
    await gql('mutation { ImagingStudyDelete(id: "hist") { deleted } }')
    body = await gql('{ ImagingStudyHistory(id: "hist") { description meta { versionId } } }')
    assert body["data"]["ImagingStudyHistory"] == [
        {"description": "second", "meta": {"versionId": "2"}},
        {"description": resource["description"], "meta": {"versionId": "1"}},
    ]


@pytest.mark.parametrize(
    ("arguments", "argument"), [("_count: 0", "_count"), ("_offset: -1", "_offset")]
)
async def test_bad_nested_paging_is_bad_user_input(gql: Gql, arguments: str, argument: str) -> None:
    await gql(CREATE, res=demo.study("np", 1, 2))
    body = await gql(
        f'{{ ImagingStudy(id: "np") {{ series {{ instance({arguments}) {{ uid }} }} }} }}'
    )
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == [argument]
