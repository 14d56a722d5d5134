"""The access gate (api/access/scoped.py) under attack: what a token may learn of studies it may not
read through conditional create, import, history, duplicates and errors; and that no public
repository method can bypass the gate."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.access.scoped import ScopedStore
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.dicom import write
from tests.support.graphql import call, codes
from tests.support.tokens import new_study, study, token

CREATE = """mutation($r: ImagingStudyInput!, $c: String) {
  ImagingStudyCreate(res: $r, ifNoneExist: $c) { id subject { reference } fhirJson } }"""
HISTORY = '{ ImagingStudyHistory(id: "moved") { meta { versionId } subject { reference } } }'
IMPORT = "mutation($r: JSON!) { ImagingStudyImport(resource: $r) { status id outcome } }"
UPDATE = """mutation($id: ID!, $r: ImagingStudyInput!) {
  ImagingStudyUpdate(id: $id, res: $r) { id } }"""


def secrets_of_theirs() -> list[str]:
    """What must never reach patient p1's token: p2's study id, UID and content."""
    return ["theirs", demo.uid("theirs"), "Patient/p2"]


def leaks(body: dict[str, Any], sent: tuple[str, ...] = ()) -> list[str]:
    """p2's secrets in a response, but for those the caller itself sent."""
    text = json.dumps(body)
    return [secret for secret in secrets_of_theirs() if secret in text and secret not in sent]


def test_every_public_repository_method_goes_through_the_gate() -> None:
    public = {
        name
        for name, member in inspect.getmembers(Repository)
        if not name.startswith("_") and callable(member)
    }
    covered = {name for name in dir(ScopedStore) if not name.startswith("_")}
    assert public - covered - set(ScopedStore.NOT_FOR_CALLERS) == set(), (
        "a repository method callers could reach without the access gate"
    )


def test_resolvers_reach_the_store_only_through_the_gate() -> None:
    root = Path(__file__).parents[3] / "api"
    for module in (
        "graphql/resolvers/queries.py",
        "graphql/resolvers/mutations.py",
        "graphql/resolvers/subscriptions.py",
        "transfer/stream.py",
        "transfer/targets.py",
        "cli/commands.py",
    ):
        source = (root / module).read_text()
        assert "context._repo" not in source, module
        assert "context.repo" not in source, module
        assert "Importer(" not in source, module


@pytest.mark.parametrize(
    "condition",
    [
        "_id=theirs",
        f"identifier=urn:dicom:uid|urn:oid:{demo.uid('theirs')}",
        "patient=p2",
        "subject=Patient/p2",
        "status=available",
    ],
)
@pytest.mark.parametrize("scope", ["patient/ImagingStudy.c", "patient/ImagingStudy.cruds"])
async def test_conditional_create_never_returns_another_patients_study(
    client: httpx.AsyncClient, store: Repository, condition: str, scope: str
) -> None:
    before = {s["id"] for s in await store.search([], 100)}
    body = await call(
        client, token(scope, patient="p1"), CREATE, r=new_study("attempt", "p1"), c=condition
    )
    assert leaks(body) == [], body
    # Nothing of p2's matched, so p1's own study was created (or, for a token that may not
    # read p1's studies, the p1 study that matched was refused without a word about it).
    created = {s["id"] for s in await store.search([], 100)} - before
    assert len(created) <= 1


async def test_a_conditional_create_is_a_search_and_needs_search_access(
    client: httpx.AsyncClient, store: Repository
) -> None:
    """A create-only token could otherwise ask any yes/no question of every study ("does
    something match?"): it gets the same refusal whatever the condition matches."""
    await store.create({k: v for k, v in study("also-theirs", "p2").items() if k != "identifier"})
    bearer = token("user/ImagingStudy.c")  # may create anything, read nothing
    answers = [
        await call(client, bearer, CREATE, r=new_study("x", "p3"), c=condition)
        for condition in ("_id=theirs", "patient=p2", "_id=nothing-has-this-id")
    ]
    assert all(codes(a) == {"FORBIDDEN"} for a in answers)
    assert len({a["errors"][0]["message"] for a in answers}) == 1
    assert all(leaks(a) == [] for a in answers)
    # A caller that may search everything gets the match, and the ambiguity.
    reader = token("user/ImagingStudy.crs")
    found = await call(client, reader, CREATE, r=new_study("x", "p3"), c="_id=theirs")
    assert found["data"]["ImagingStudyCreate"]["id"] == "theirs"
    assert (
        "more than one"
        in (await call(client, reader, CREATE, r=new_study("x", "p3"), c="patient=p2"))["errors"][
            0
        ]["message"]
    )


async def test_a_write_only_token_learns_nothing_of_the_study_it_cannot_read(
    client: httpx.AsyncClient,
) -> None:
    """Writes that answer with the study need read access to it; a delete, which answers
    with nothing, needs only `d` but does not say the stored version."""
    update_only = token("user/ImagingStudy.u")
    for mutation in (
        'mutation { ImagingStudySetStatus(id: "theirs", status: "registered", '
        'versionId: "0") { id } }',
        'mutation { ImagingStudyAddSeries(id: "theirs", series: []) { id } }',
    ):
        body = await call(client, update_only, mutation)
        assert codes(body) == {"FORBIDDEN"}
        assert "theirs" not in body["errors"][0]["message"]
    delete_only = token("user/ImagingStudy.d")
    body = await call(
        client,
        delete_only,
        'mutation { ImagingStudyDelete(id: "theirs", versionId: "9") { deleted } }',
    )
    assert codes(body) == {"VERSION_CONFLICT"}
    assert "(1)" not in json.dumps(body)
    reader = await call(
        client,
        token("user/ImagingStudy.rd"),
        'mutation { ImagingStudyDelete(id: "theirs", versionId: "9") { deleted } }',
    )
    assert "(1)" in reader["errors"][0]["message"]  # a reader is told the stored version


async def test_a_dry_run_import_says_what_the_write_would(client: httpx.AsyncClient) -> None:
    copied = new_study("copy", "p1") | {"identifier": study("theirs", "p2")["identifier"]}
    bearer = token("patient/ImagingStudy.cruds", patient="p1")
    dry = await call(
        client,
        bearer,
        "mutation($r: JSON!) { ImagingStudyImport(resource: $r, dryRun: true) { status outcome } }",
        r=copied,
    )
    real = await call(client, bearer, IMPORT, r=copied)
    assert dry["data"]["ImagingStudyImport"][0]["status"] == "rejected"
    assert (
        dry["data"]["ImagingStudyImport"][0]["outcome"]
        == real["data"]["ImagingStudyImport"][0]["outcome"]
    )


async def test_history_shows_a_confined_caller_only_its_patients_versions(
    client: httpx.AsyncClient, store: Repository
) -> None:
    first = study("moved", "p1")
    await store.create(first)
    await store.update("moved", {**first, "description": "v2, still p1's"}, None)
    await store.update("moved", {**study("moved", "p2"), "description": "v3: p2's"}, None)
    await store.update("moved", {**study("moved", "p2"), "description": "v4: p2's"}, None)
    as_p1 = await call(client, token("patient/ImagingStudy.rs", patient="p1"), HISTORY)
    as_p2 = await call(client, token("patient/ImagingStudy.rs", patient="p2"), HISTORY)
    assert as_p1["data"]["ImagingStudyHistory"] == []  # moved away: p1 sees none of it
    assert [v["meta"]["versionId"] for v in as_p2["data"]["ImagingStudyHistory"]] == ["4", "3"]
    everyone = await call(client, token("user/ImagingStudy.rs"), HISTORY)
    assert len(everyone["data"]["ImagingStudyHistory"]) == 4
    # Deleted, the study's last live version still decides.
    await store.delete("moved", None)
    as_p2 = await call(client, token("patient/ImagingStudy.rs", patient="p2"), HISTORY)
    assert [v["meta"]["versionId"] for v in as_p2["data"]["ImagingStudyHistory"]] == ["4", "3"]


async def test_history_count_is_applied_by_the_store(store: Repository) -> None:
    study_ = study("long", "p1")
    await store.create(study_)
    for n in range(12):
        await store.update("long", {**study_, "description": f"v{n + 2}"}, None)
    versions = await store.history("long", 3, {"meta"})
    assert [v["meta"]["versionId"] for v in versions] == ["13", "12", "11"]
    assert "series" not in versions[0]  # the projection applies


async def test_a_duplicate_study_uid_names_the_holder_only_to_a_reader(
    client: httpx.AsyncClient,
) -> None:
    copied = new_study("copy", "p1") | {"identifier": study("theirs", "p2")["identifier"]}
    confined = await call(
        client, token("patient/ImagingStudy.cruds", patient="p1"), CREATE, r=copied
    )
    assert codes(confined) == {"BAD_USER_INPUT"}
    issue = confined["errors"][0]["extensions"]["resource"]["issue"][0]
    assert issue["expression"] == ["ImagingStudy.identifier[0]"]
    assert "already carried by another study" in issue["diagnostics"]
    assert "theirs" not in json.dumps(confined)
    reader = await call(
        client,
        token("user/ImagingStudy.cr"),
        CREATE,
        r=copied | {"subject": {"reference": "Patient/p9"}},
    )
    assert "ImagingStudy/theirs" in reader["errors"][0]["message"]


async def test_running_a_create_twice_leaves_one_study(
    client: httpx.AsyncClient, store: Repository
) -> None:
    bearer = token("user/ImagingStudy.cruds")
    fresh = new_study("twice", "p5")
    assert "errors" not in await call(client, bearer, CREATE, r=fresh)
    again = await call(client, bearer, CREATE, r=fresh)
    assert codes(again) == {"BAD_USER_INPUT"}
    assert (
        len(await store.search([("identifier", f"urn:dicom:uid|urn:oid:{demo.uid('twice')}")], 10))
        == 1
    )


async def test_an_update_cannot_take_another_studys_uid(
    client: httpx.AsyncClient, store: Repository
) -> None:
    taking = study("mine", "p1") | {"identifier": study("theirs", "p2")["identifier"]}
    body = await call(client, token("user/ImagingStudy.cruds"), UPDATE, id="mine", r=taking)
    assert codes(body) == {"BAD_USER_INPUT"}
    assert (await store.get("mine"))["identifier"] == study("mine", "p1")["identifier"]


async def test_import_never_merges_across_subjects(
    client: httpx.AsyncClient, store: Repository
) -> None:
    before = await store.get("theirs")
    incoming = new_study("theirs", "p1")  # p2's Study Instance UID, claimed for p1
    open_ = await call(client, token("user/ImagingStudy.cruds"), IMPORT, r=incoming)
    [result] = open_["data"]["ImagingStudyImport"]
    assert result["status"] == "rejected"
    assert "another subject" in result["outcome"]["issue"][0]["diagnostics"]
    confined = await call(
        client, token("patient/ImagingStudy.cruds", patient="p1"), IMPORT, r=incoming
    )
    [result] = confined["data"]["ImagingStudyImport"]
    assert result["status"] == "rejected"
    assert leaks(confined, sent=(demo.uid("theirs"),)) == []
    assert await store.get("theirs") == before


async def test_ingest_never_adds_into_another_subjects_study(
    client: httpx.AsyncClient, store: Repository, tmp_path: Path
) -> None:
    from store.interop.ingest import Ingest

    claimed = new_study("squat", "p1") | {
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}]
    }  # the file's Study UID
    assert "errors" not in await call(
        client, token("patient/ImagingStudy.cruds", patient="p1"), CREATE, r=claimed
    )
    [squat] = await store.search([("identifier", "urn:dicom:uid|urn:oid:1.2.3")], 2)
    report = await Ingest(store).run([write(tmp_path, "a.dcm")])
    assert report.instances_added == 0
    assert report.studies_updated == 0
    assert "another patient" in report.failed[0][1]
    assert await store.get(squat["id"]) == squat


@pytest.mark.parametrize("bad_id", [None, 7, ["a"], {"x": 1}, "no spaces allowed"])
async def test_malformed_import_ids_are_entry_rejections(
    client: httpx.AsyncClient, store: Repository, bad_id: Any, caplog: pytest.LogCaptureFixture
) -> None:
    payload = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": new_study("good", "p1")},
            {"resource": new_study("bad", "p1") | {"id": bad_id}},
        ],
    }
    with caplog.at_level("INFO", logger="imaging.audit"):
        body = await call(client, token("user/ImagingStudy.cruds"), IMPORT, r=payload)
    assert "errors" not in body, body
    good, bad = body["data"]["ImagingStudyImport"]
    assert good["status"] == "created"
    assert bad["status"] == "rejected"
    assert bad["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.id"]
    [record] = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert {"what": {"reference": f"ImagingStudy/{good['id']}"}} in record["entity"]


async def test_another_patients_study_is_never_loaded(
    client: httpx.AsyncClient, store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a large study only to drop it would take measurably longer than answering for
    a missing id: the patient is part of the store query instead."""
    loaded: list[str] = []
    real = store._studies.find_one

    async def spy(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        found = await real(query, *args, **kwargs)
        if found is not None:
            loaded.append(found["_id"])
        return found

    monkeypatch.setattr(store._studies, "find_one", spy, raising=False)
    bearer = token("patient/ImagingStudy.cruds", patient="p1")
    for operation in (
        '{ ImagingStudy(id: "theirs") { id series { uid } } }',
        'mutation { ImagingStudySetStatus(id: "theirs", status: "cancelled") { id } }',
        'mutation { ImagingStudyDelete(id: "theirs") { deleted } }',
    ):
        assert codes(await call(client, bearer, operation)) <= {"NOT_FOUND"}
    assert "theirs" not in loaded


@pytest.mark.parametrize(
    "expression",
    [
        "_id eq theirs or _id eq mine",
        "patient eq p2 or not (patient eq p2)",
        "not (patient eq p1)",
        "patient ne p1 or (status pr true and not (_id eq nothing))",
        "(patient eq p2) or (patient eq p1 and patient eq p2)",
        "subject re Patient/p2 or _lastUpdated pr true",
    ],
)
async def test_a_filter_never_widens_a_confined_search(
    client: httpx.AsyncClient, expression: str
) -> None:
    """`_filter` is one more AND clause beside the patient confinement: or/not inside it
    cannot reach past it, on a list, a connection or a count."""
    bearer = token("patient/ImagingStudy.rs", patient="p1")
    body = await call(
        client,
        bearer,
        "query($f: String) { ImagingStudyList(_filter: $f) { id }"
        " ImagingStudyConnection(_filter: $f) { count edges { resource { id } } }"
        " c: ImagingStudyConnection(_filter: $f) { count } }",
        f=expression,
    )
    assert "errors" not in body, body
    data = body["data"]
    assert {s["id"] for s in data["ImagingStudyList"]} <= {"mine"}
    assert {e["resource"]["id"] for e in data["ImagingStudyConnection"]["edges"]} <= {"mine"}
    assert data["c"]["count"] == len(data["ImagingStudyList"])
    assert leaks(body) == [], body


async def test_an_identifier_search_never_widens_a_confined_search(
    client: httpx.AsyncClient, store: Repository
) -> None:
    """A token confined to p1 that knows p2's MRN finds nothing by it: the identifier search is
    ANDed with the confinement, like every other argument."""
    for study_id, patient, mrn in (("mine-mrn", "p1", "MRN-1"), ("theirs-mrn", "p2", "MRN-2")):
        resource = study(study_id, patient)
        resource["subject"]["identifier"] = {"system": "urn:mrn", "value": mrn}
        resource["basedOn"] = [{"type": "ServiceRequest", "identifier": {"value": f"A-{mrn}"}}]
        await store.create(resource)
    query = """query($m: [String!], $s: [String!], $a: [String!]) {
      ImagingStudyList(patient_identifier: $m, subject_identifier: $s, based_on_identifier: $a) {
        id }
      ImagingStudyConnection(patient_identifier: $m, subject_identifier: $s,
        based_on_identifier: $a) { count edges { resource { id } } } }"""
    bearer = token("patient/ImagingStudy.rs", patient="p1")
    for found, variables in [
        ([], {"m": ["urn:mrn|MRN-2"]}),
        ([], {"s": ["MRN-2"]}),
        ([], {"a": ["A-MRN-2"]}),
        (["mine-mrn"], {"m": ["MRN-2", "MRN-1"]}),
    ]:
        body = await call(client, bearer, query, **variables)
        assert "errors" not in body, body
        assert [s["id"] for s in body["data"]["ImagingStudyList"]] == found
        connection = body["data"]["ImagingStudyConnection"]
        assert [e["resource"]["id"] for e in connection["edges"]] == found
        assert connection["count"] == len(found)
    # The unconfined operator's view, so the empty answers above are the gate's doing.
    everyone = token("system/ImagingStudy.rs", patient=None)
    body = await call(client, everyone, query, m=["MRN-2"])
    assert [s["id"] for s in body["data"]["ImagingStudyList"]] == ["theirs-mrn"]


@pytest.mark.parametrize(
    ("element", "extra"),
    [
        ("subject.identifier", {"subject": {"identifier": {"system": "urn:mrn", "value": "M2"}}}),
        ("subject.display", {"subject": {"display": "Patient Two"}}),
        (
            "basedOn[0].identifier",
            {"basedOn": [{"type": "ServiceRequest", "identifier": {"value": "ACC-2"}}]},
        ),
        (
            "identifier[0]",
            {"identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "ACC-2"}]},
        ),
        (
            "referrer.identifier",
            {"referrer": {"type": "Practitioner", "identifier": {"value": "M2"}}},
        ),
    ],
)
async def test_a_confined_writer_cannot_put_a_study_in_anothers_worklist(
    client: httpx.AsyncClient, store: Repository, element: str, extra: dict[str, Any]
) -> None:
    """A patient-confined token cannot set an MRN, a name or an accession number beside its
    subject reference: nothing it carries vouches for them, and the identifier searches would
    list the study in another patient's worklist. Creating, updating and importing alike; an
    update that keeps what the record's systems wrote is allowed."""
    bearer = token("patient/ImagingStudy.cruds", patient="p1")
    before = await store.search([("patient", "p1")], 10)
    resource = new_study("planted", "p1")
    for key, value in extra.items():
        resource[key] = {**resource[key], **value} if key == "subject" else value
    body = await call(client, bearer, CREATE, r=resource)
    assert codes(body) == {"FORBIDDEN"}
    assert body["errors"][0]["extensions"]["resource"]["issue"][0]["expression"] == [
        f"ImagingStudy.{element}"
    ]
    body = await call(client, bearer, IMPORT, r={**resource, "resourceType": "ImagingStudy"})
    [entry] = body["data"]["ImagingStudyImport"]
    assert entry["status"] == "rejected"
    assert entry["outcome"]["issue"][0]["expression"] == [f"ImagingStudy.{element}"]
    assert await store.search([("patient", "p1")], 10) == before
    # Written by the record's systems, kept by the patient's update; changed by it, refused.
    await store.create(
        {**study("kept", "p1"), **{k: v for k, v in resource.items() if k != "id"}} | {"id": "kept"}
    )
    stored = await store.get("kept")
    kept = {k: v for k, v in stored.items() if k not in ("meta", "id")}
    body = await call(client, bearer, UPDATE, id="kept", r={**kept, "description": "mine"})
    assert "errors" not in body, body
    changed = json.loads(
        json.dumps(kept).replace("M2", "M3").replace("Two", "Three").replace("ACC-2", "ACC-3")
    )
    body = await call(client, bearer, UPDATE, id="kept", r=changed)
    assert codes(body) == {"FORBIDDEN"}
    # An import that updates it by id is refused alike, as the gate's refusal, not as an
    # unexpected error (without the Study UID, which would match it first and refuse a change
    # of subject itself).
    by_id = {
        **changed,
        "identifier": [i for i in changed["identifier"] if i.get("system") != "urn:dicom:uid"],
    }
    if not by_id["identifier"]:
        del by_id["identifier"]
    body = await call(
        client, bearer, IMPORT, r={**by_id, "id": "kept", "resourceType": "ImagingStudy"}
    )
    [entry] = body["data"]["ImagingStudyImport"]
    assert entry["status"] == "rejected"
    assert entry["outcome"]["issue"][0]["code"] == "security", entry
    assert entry["outcome"]["issue"][0]["expression"] == [f"ImagingStudy.{element}"]
    assert (await store.get("kept"))["description"] == "mine"


async def test_a_versioned_subject_reference_is_its_patients_on_every_path(
    client: httpx.AsyncClient, store: Repository
) -> None:
    """`Patient/p1/_history/1` names patient p1: searches read it so, and reads, history and
    the `$graphql` endpoint now say the same (they answered null and [] while searches listed
    it; found black-box). Another patient sees it nowhere."""
    versioned = study("versioned", "p1")
    versioned["subject"] = {"reference": "Patient/p1/_history/1"}
    await store.create(versioned)
    query = (
        '{ ImagingStudy(id: "versioned") { id } ImagingStudyList(patient: "p1") { id }'
        ' ImagingStudyHistory(id: "versioned") { id } }'
    )
    mine = (await call(client, token("patient/ImagingStudy.rs", patient="p1"), query))["data"]
    assert mine["ImagingStudy"] == {"id": "versioned"}
    assert {"id": "versioned"} in mine["ImagingStudyList"]
    assert mine["ImagingStudyHistory"] == [{"id": "versioned"}]
    theirs = (await call(client, token("patient/ImagingStudy.rs", patient="p2"), query))["data"]
    assert theirs["ImagingStudy"] is None
    assert theirs["ImagingStudyList"] == []
    assert theirs["ImagingStudyHistory"] == []
