"""Search through GraphQL: list arguments as OR, the Connection shape and its cursors,
projection from the selection set, and the indexes behind it all."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from api.graphql import fhirpath_time
from store.interop import demo
from store.mongo import indexes
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error
from tests.support.search_data import STUDIES

CONNECTION = """query($c: Int, $cursor: String, $modality: [String!]) {
  ImagingStudyConnection(_count: $c, _cursor: $cursor, modality: $modality) {
    count offset pagesize first previous next last edges { mode score resource { id } } } }"""


class Recorder:
    """Wraps a collection and records the reads sent to it, with their projections."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if name in ("find", "find_one", "count_documents"):

            def record(*args: Any, **kwargs: Any) -> Any:
                self.calls.append((name, dict(args[1]) if len(args) > 1 and args[1] else None))
                return attr(*args, **kwargs)

            return record
        return attr


@pytest.fixture
async def loaded(store: Repository, gql: Gql) -> Repository:
    for study in STUDIES:
        assert "errors" not in await gql(CREATE, res=copy.deepcopy(study))
    return store


@pytest.fixture
def recorder(store: Repository, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    spy = Recorder(store._studies)
    monkeypatch.setattr(store, "_studies", spy)
    # Without the study cache, whose version probe would be one more read to record.
    monkeypatch.setattr(store, "cache", None)
    return spy


async def test_list_items_are_or_and_arguments_and(loaded: Repository, gql: Gql) -> None:
    # HL7's graphql.html: "Values in an array are ORed".
    body = await gql('{ ImagingStudyList(_id: ["a", "b"]) { id } }')
    assert body["data"]["ImagingStudyList"] == [{"id": "a"}, {"id": "b"}]
    body = await gql('{ ImagingStudyList(modality: ["CT", "MR"], patient: "p2") { id } }')
    assert body["data"]["ImagingStudyList"] == [{"id": "b"}]
    body = await gql(
        '{ ImagingStudyList(based_on: "sr1", body_site: "T-1", dicom_class: '
        '"urn:oid:1.2.840.10008.5.1.4.1.1.2", _lastUpdated: "ge2000") { id } }'
    )
    assert body["data"]["ImagingStudyList"] == [{"id": "a"}]


async def test_malformed_argument_is_named(loaded: Repository, gql: Gql) -> None:
    body = await gql('{ ImagingStudyList(started: "ge2024-13") { id } }')
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == ["started"]


async def test_connection_shape_and_walk(loaded: Repository, gql: Gql) -> None:
    first = (await gql(CONNECTION, c=2))["data"]["ImagingStudyConnection"]
    assert first["count"] == 3
    assert (first["offset"], first["pagesize"], first["previous"]) == (0, 2, None)
    assert first["edges"] == [
        {"mode": "match", "score": None, "resource": {"id": "a"}},
        {"mode": "match", "score": None, "resource": {"id": "b"}},
    ]
    second = (await gql(CONNECTION, c=2, cursor=first["next"]))["data"]
    second = second["ImagingStudyConnection"]
    assert [e["resource"]["id"] for e in second["edges"]] == ["c"]
    assert second["next"] is None
    assert second["offset"] == 2
    back = (await gql(CONNECTION, c=2, cursor=second["previous"]))["data"]
    assert back["ImagingStudyConnection"]["edges"] == first["edges"]
    foreign = await gql(CONNECTION, c=2, cursor=first["next"], modality=["CT"])
    assert error(foreign)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_worklist_page_does_not_read_instances(
    loaded: Repository, gql: Gql, recorder: Recorder
) -> None:
    body = await gql(
        '{ ImagingStudyList(_count: 50, started: "ge2020") { id started '
        "numberOfInstances series { uid modality { coding { code } } } } }"
    )
    assert len(body["data"]["ImagingStudyList"]) == 2
    [(call, projection)] = recorder.calls
    assert call == "find"
    assert not any(path.startswith("series.instance") for path in projection)
    assert {"series.uid", "series.modality", "started", "numberOfInstances"} <= set(projection)


async def test_viewer_page_reads_only_what_it_shows(
    loaded: Repository, gql: Gql, recorder: Recorder
) -> None:
    body = await gql(
        '{ ImagingStudy(id: "a") { ...tree } } fragment tree on ImagingStudy '
        "{ series { numberOfInstances instance(_count: 1) { uid } } }"
    )
    assert body["data"]["ImagingStudy"]["series"][0]["instance"] == [{"uid": "1.2.3.1.1"}]
    [(_, projection)] = recorder.calls
    assert set(projection) == {
        "id",
        "resourceType",
        "subject",
        "series.uid",
        "series.number",
        "series.modality",
        "series.numberOfInstances",
        "series.instance.uid",
        "series.instance.number",
    }


async def test_count_only_connection_reads_no_documents(
    loaded: Repository, gql: Gql, recorder: Recorder
) -> None:
    body = await gql('{ ImagingStudyConnection(modality: ["CT", "MR"]) { count } }')
    assert body["data"]["ImagingStudyConnection"] == {"count": 2}
    assert [call for call, _ in recorder.calls] == ["count_documents"]


async def test_cursor_only_connection_reads_sort_keys(
    loaded: Repository, gql: Gql, recorder: Recorder
) -> None:
    body = await gql("{ ImagingStudyConnection(_count: 1) { next } }")
    assert body["data"]["ImagingStudyConnection"]["next"]
    [(_, projection)] = recorder.calls
    assert not any(p.startswith("series") or p == "identifier" for p in projection)


async def test_nested_paging_in_one_request(gql: Gql) -> None:
    resource = demo.study("deep", 2, 300)
    resource["series"].reverse()  # stored in (number, uid) order whatever the input order
    await gql(CREATE, res=resource)
    body = await gql(
        '{ ImagingStudy(id: "deep") { series { number numberOfInstances '
        "instance(_count: 100, _offset: 200) { number } } } }"
    )
    series = body["data"]["ImagingStudy"]["series"]
    assert [s["number"] for s in series] == [1, 2]
    assert [i["number"] for i in series[0]["instance"]] == list(range(201, 301))
    assert series[0]["numberOfInstances"] == 300


async def test_every_index_exists_with_a_reason(store: Repository) -> None:
    plan = indexes.plan()
    assert all(entry["reason"] for entry in plan)
    for collection in {entry["collection"] for entry in plan}:
        present = set(await store._db[collection].index_information())
        wanted = {e["name"] for e in plan if e["collection"] == collection}
        assert wanted <= present
    await store.ensure_indexes()  # idempotent


async def test_a_comma_is_part_of_the_value(loaded: Repository, gql: Gql) -> None:
    # The REST composite syntax is not GraphQL's: "CT,MR" is one (unknown) code.
    body = await gql('{ ImagingStudyList(modality: "CT,MR") { id } }')
    assert body["data"]["ImagingStudyList"] == []
    body = await gql('{ ImagingStudyList(_id: ["a,b", "c"]) { id } }')
    assert body["data"]["ImagingStudyList"] == [{"id": "c"}]
    # A token's bar keeps its meaning inside a list item.
    body = await gql('{ ImagingStudyList(identifier: ["urn:acc|ACC1", "x"]) { id } }')
    assert body["data"]["ImagingStudyList"] == [{"id": "a"}]


async def test_list_items_count_against_the_value_caps(loaded: Repository, gql: Gql) -> None:
    body = await gql(
        "query($ids: [String!]) { ImagingStudyList(_id: $ids) { id } }",
        ids=[f"x{n}" for n in range(101)],
    )
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == ["_id"]
    # One item with 200 commas is one value, not 201.
    body = await gql(
        "query($ids: [String!]) { ImagingStudyList(_id: $ids) { id } }", ids=["," * 200]
    )
    assert body["data"]["ImagingStudyList"] == []


async def test_filter_argument(loaded: Repository, gql: Gql) -> None:
    query = "query($f: String) { ImagingStudyList(_filter: $f) { id } }"
    found = await gql(query, f='(modality eq CT or modality eq "MR") and not (_id eq b)')
    assert found["data"]["ImagingStudyList"] == [{"id": "a"}]
    found = await gql(query, f="started ge 2024-01-01 or status eq cancelled")
    assert found["data"]["ImagingStudyList"] == [{"id": "a"}, {"id": "c"}]
    # AND with the other arguments; a cursor made with it works with it, and only with it.
    body = await gql(
        '{ ImagingStudyConnection(_filter: "status ne available", _count: 1, '
        'patient: "p2") { count next edges { resource { id } } } }'
    )
    page = body["data"]["ImagingStudyConnection"]
    assert (page["count"], page["edges"]) == (1, [{"resource": {"id": "b"}}])
    bad = await gql(query, f="modality eq CT and started gt")
    assert error(bad)["extensions"]["code"] == "BAD_USER_INPUT"
    issue = error(bad)["extensions"]["resource"]["issue"][0]
    assert issue["expression"] == ["_filter"]
    assert issue["diagnostics"] == (
        "at character 30: expected a space and a value after 'started gt'"
    )


FHIRPATH_LIST = "query($e: String) { ImagingStudyList(fhirpath: $e) { id } }"


@pytest.mark.parametrize(
    ("expression", "kept"),
    [
        ("series.where(modality.coding.code = 'CT').exists()", ["a"]),
        ("status = 'available' or subject.reference.startsWith('Group/')", ["a", "c"]),
        ("identifier.value", ["a", "b"]),  # not a boolean: kept when not empty
        ("series.count() > 5", []),
        ("reason.concept.coding.where(system = 'http://snomed.info/sct').code", ["a"]),
    ],
)
async def test_fhirpath_keeps_the_studies_it_holds_on(
    loaded: Repository, gql: Gql, expression: str, kept: list[str]
) -> None:
    # The selection asks for `id` only: the expression still sees the whole study.
    body = await gql(FHIRPATH_LIST, e=expression)
    assert body["data"]["ImagingStudyList"] == [{"id": i} for i in kept]


async def test_fhirpath_connection_pages_may_come_out_shorter(loaded: Repository, gql: Gql) -> None:
    query = """query($c: String) { ImagingStudyConnection(_count: 2, _cursor: $c,
      fhirpath: "status != 'registered'") { count next edges { resource { id status } } } }"""
    first = (await gql(query))["data"]["ImagingStudyConnection"]
    assert first["count"] == 3  # the search's count, before fhirpath
    assert [e["resource"]["id"] for e in first["edges"]] == ["a"]  # b was read, then dropped
    second = (await gql(query, c=first["next"]))["data"]["ImagingStudyConnection"]
    assert [e["resource"]["id"] for e in second["edges"]] == ["c"]
    assert second["next"] is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("series.where(", "not a FHIRPath expression this server can evaluate: where wrong arity"),
        ("nosuchfunction(1)", "nosuchfunction() is not served here"),
        ("  ", "the expression must not be empty"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
async def test_a_bad_fhirpath_is_refused_before_the_search(
    loaded: Repository, gql: Gql, recorder: Recorder, expression: str, message: str
) -> None:
    body = await gql(FHIRPATH_LIST, e=expression)
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    issue = error(body)["extensions"]["resource"]["issue"][0]
    assert issue["expression"] == ["fhirpath"]
    assert message in issue["diagnostics"]
    assert recorder.calls == []


async def test_a_fhirpath_failing_on_a_study_names_none_of_its_values(
    loaded: Repository, gql: Gql
) -> None:
    # The engine's own messages would quote the values: "Cannot ['urn:oid:1.2.3'] + [1]".
    for expression in ("identifier.value.single()", "identifier.value.first() + 1"):
        body = await gql(FHIRPATH_LIST, e=expression)  # a has two identifiers
        assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
        assert "fails on a study the search found" in error(body)["message"]
        assert "urn:oid" not in json.dumps(body)


async def test_fhirpath_evaluation_is_bounded_in_time(
    loaded: Repository, gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fhirpath_time, "MAX_SECONDS", -1.0)  # spent before the first study
    body = await gql(FHIRPATH_LIST, e="true")
    assert error(body)["extensions"]["code"] == "QUERY_REJECTED"
    assert "FHIRPath evaluation" in error(body)["message"]


async def test_worklist_by_patient_identifier(loaded: Repository, gql: Gql) -> None:
    """The worklist query of radiology, all studies of MRN X, on both search fields, with a
    list as OR and the accession number on basedOn."""
    query = """query($mrn: [String!], $acc: [String!]) {
      ImagingStudyList(patient_identifier: $mrn, based_on_identifier: $acc) { id }
      ImagingStudyConnection(patient_identifier: $mrn, based_on_identifier: $acc) {
        count edges { resource { id } } } }"""
    for mrn, acc, found in [
        (["urn:mrn|MRN1"], None, ["a"]),
        (["urn:mrn|MRN1", "|MRN2"], None, ["a", "b"]),
        (["MRN3"], None, []),  # a Group's identifier: not a patient
        (None, ["ACC2"], ["b"]),
        (["urn:mrn|MRN1"], ["ACC2"], []),
    ]:
        body = await gql(query, mrn=mrn, acc=acc)
        assert "errors" not in body, body
        assert [s["id"] for s in body["data"]["ImagingStudyList"]] == found
        connection = body["data"]["ImagingStudyConnection"]
        assert connection["count"] == len(found)
        assert [e["resource"]["id"] for e in connection["edges"]] == found
    body = await gql('{ ImagingStudyList(subject_identifier: "MRN3") { id } }')
    assert body["data"]["ImagingStudyList"] == [{"id": "c"}]


async def test_identifier_argument_errors_name_the_argument(loaded: Repository, gql: Gql) -> None:
    body = await gql('{ ImagingStudyList(referrer_identifier: "a|b|c") { id } }')
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == [
        "referrer_identifier"
    ]
    assert "system|value" in error(body)["message"]
    # _filter's grammar has no modifiers: refused with where to go instead.
    body = await gql('{ ImagingStudyList(_filter: "patient:identifier eq MRN1") { id } }')
    assert error(body)["extensions"]["resource"]["issue"][0]["expression"] == ["_filter"]
    assert "patient_identifier" in error(body)["message"]
