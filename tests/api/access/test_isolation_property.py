"""Two patients' tokens, random operations: no response, error or change event given to one
ever holds the other's study id, Study Instance UID or content, unless the caller sent that
value itself. Hypothesis drives creates, conditional creates, imports, ingest-style creates,
reads, lists, history, writes aimed at the other's studies, moves of a study between the
patients by an administrator, and the operator's ingest of one patient's DICOM study under a
Study Instance UID the other patient claimed first."""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.access.auth import Authenticator
from api.access.scoped import ScopedStore
from api.http.app import create_app
from api.settings import Settings
from api.transfer.targets import LocalTarget
from store.interop import demo
from store.interop.ingest import Ingest
from store.mongo import client
from store.mongo.events import Change
from store.mongo.repository import Repository
from tests.support.dicom import write
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token

PATIENTS = ("pa", "pb")
CREATE = """mutation($r: ImagingStudyInput!, $c: String) {
  ImagingStudyCreate(res: $r, ifNoneExist: $c) { id identifier { value } description } }"""
IMPORT = "mutation($r: JSON!) { ImagingStudyImport(resource: $r) { status id outcome } }"
READ = """query($id: ID!) { ImagingStudy(id: $id) { id description subject { reference }
    series { instance { uid } } }
  ImagingStudyHistory(id: $id) { id description meta { versionId } } }"""
LIST = """query($p: [String!]) { ImagingStudyList(patient: $p) { id description
    series { instance { uid } } }
  ImagingStudyConnection(patient: $p) { count edges { resource { id description } } } }"""
WRITES = {
    "status": 'mutation($id: ID!) { ImagingStudySetStatus(id: $id, status: "cancelled") '
    "{ id description } }",
    "delete": 'mutation($id: ID!) { ImagingStudyDelete(id: $id, versionId: "1") { id } }',
    "remove": 'mutation($id: ID!) { ImagingStudyRemoveSeries(id: $id, uids: ["1.2"]) '
    "{ id description } }",
}


@dataclass
class World:
    """What each patient owns now: study ids and UIDs (secrets to the other patient)."""

    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> resource
    owner: dict[str, str] = field(default_factory=dict)  # id -> patient
    images: dict[str, set[str]] = field(default_factory=dict)  # patient -> SOP UIDs ingested
    counter: int = 0
    repo: Any = None

    def secrets_of(self, patient: str) -> set[str]:
        found = {f"Patient/{patient}", f"secret-of-{patient}", *self.images.get(patient, ())}
        for study_id, who in self.owner.items():
            if who == patient:
                found |= {study_id, self.studies[study_id]["identifier"][0]["value"]}
        return found

    def fresh(self, patient: str) -> dict[str, Any]:
        self.counter += 1
        name = f"{patient}-{self.counter}"
        resource = demo.study(name, 1, 1, patient=patient)
        del resource["id"]
        resource["description"] = f"secret-of-{patient} #{self.counter}"
        return resource


Op = tuple[str, int, int]  # (kind, actor index, a number to pick targets with)
KINDS = [
    "create",
    "create-if",
    "copy-uid",
    "import-uid",
    "import-id",
    "read",
    "list",
    "write",
    "move",
    "ingest",
]
ops = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 1), st.integers(0, 50)),
    min_size=1,
    max_size=10,
)


def _tokens() -> dict[str, str]:
    return {p: token("patient/ImagingStudy.cruds", patient=p) for p in PATIENTS}


async def _run(script: list[Op]) -> None:
    handle, db = client.open_embedded("isolation")
    repo = Repository(db)
    await repo.ensure_indexes()
    config = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    app = create_app(config, repo)
    tokens, admin = _tokens(), token("system/*.*")
    world = World(repo=repo)
    watchers = {
        p: ScopedStore(repo, Authenticator(config).access(f"Bearer {tokens[p]}")).visible(
            "ImagingStudyChanged"
        )
        for p in PATIENTS
    }
    delivered: dict[str, list[Change]] = {p: [] for p in PATIENTS}
    async with app.state.events.subscribe() as changes:

        async def collect() -> None:
            async for change in changes:
                for p in PATIENTS:
                    if watchers[p](change):
                        delivered[p].append(change)
                        other = PATIENTS[1 - PATIENTS.index(p)]
                        assert not _leaks(json.dumps(change.resource), world, other, ""), change

        collector = asyncio.create_task(collect())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            for kind, actor, pick in script:
                me, other = PATIENTS[actor], PATIENTS[1 - actor]
                sent, body = await _step(http, world, kind, me, other, pick, tokens, admin)
                assert not _leaks(json.dumps(body), world, other, sent), (kind, body)
        await asyncio.sleep(0)
        collector.cancel()
    client.close(handle)


def _leaks(text: str, world: World, other: str, sent: str) -> list[str]:
    return [s for s in world.secrets_of(other) if s in text and s not in sent]


def _pick(world: World, patient: str, pick: int) -> str:
    owned = sorted(i for i, who in world.owner.items() if who == patient)
    return owned[pick % len(owned)] if owned else "none-yet"


async def _post(
    http: httpx.AsyncClient, bearer: str, query: str, **variables: Any
) -> tuple[str, dict[str, Any]]:
    payload = json.dumps({"query": query, "variables": variables})
    response = await http.post(
        "/graphql",
        content=payload,
        headers={"authorization": f"Bearer {bearer}", "content-type": "application/json"},
    )
    return payload, response.json()


async def _step(
    http: httpx.AsyncClient,
    world: World,
    kind: str,
    me: str,
    other: str,
    pick: int,
    tokens: dict[str, str],
    admin: str,
) -> tuple[str, Any]:
    mine, theirs = _pick(world, me, pick), _pick(world, other, pick)
    bearer = tokens[me]
    if kind in ("create", "create-if", "copy-uid"):
        resource = world.fresh(me)
        condition = None
        if kind == "create-if":
            uid = world.studies.get(theirs, {}).get("identifier", [{}])[0].get("value", "1.2")
            condition = [f"_id={theirs}", f"identifier=urn:dicom:uid|{uid}", f"patient={other}"][
                pick % 3
            ]
        if kind == "copy-uid" and theirs in world.studies:
            resource["identifier"] = world.studies[theirs]["identifier"]
        sent, body = await _post(http, bearer, CREATE, r=resource, c=condition)
        created = (body.get("data") or {}).get("ImagingStudyCreate")
        if created and created["id"] not in world.owner:
            world.studies[created["id"]], world.owner[created["id"]] = resource, me
        return sent, body
    if kind in ("import-uid", "import-id"):
        resource = world.fresh(me)
        if kind == "import-uid" and theirs in world.studies:
            resource["identifier"] = world.studies[theirs]["identifier"]
        if kind == "import-id":
            resource["id"] = theirs
        sent, body = await _post(http, bearer, IMPORT, r=resource)
        for result in (body.get("data") or {}).get("ImagingStudyImport") or ():
            if result["status"] == "created":
                world.studies[result["id"]], world.owner[result["id"]] = resource, me
        return sent, body
    if kind == "read":
        return await _post(http, bearer, READ, id=[mine, theirs][pick % 2])
    if kind == "list":
        return await _post(http, bearer, LIST, p=[[other], [me], None][pick % 3])
    if kind == "write":
        return await _post(http, bearer, list(WRITES.values())[pick % 3], id=theirs)
    if kind == "ingest":
        await _ingest(world, other, mine)
        return "", {}
    # move: an administrator puts one of my studies right, under the other patient
    if mine in world.studies:
        moved = {
            **world.studies[mine],
            "subject": {"reference": f"Patient/{other}"},
            "description": f"secret-of-{other} moved",
        }
        _, body = await _post(
            http,
            admin,
            "mutation($id: ID!, $r: ImagingStudyInput!) { "
            "ImagingStudyUpdate(id: $id, res: $r) { id } }",
            id=mine,
            r={**moved, "id": mine},
        )
        if not body.get("errors"):
            world.studies[mine], world.owner[mine] = moved, other
    return "", {}


async def _ingest(world: World, patient: str, squatted: str) -> None:
    """The operator ingests an image of `patient` whose Study Instance UID is that of one of
    the other patient's studies when there is one (claimed first): never added there."""
    world.counter += 1
    value = (
        world.studies.get(squatted, {})
        .get("identifier", [{}])[0]
        .get("value", f"urn:oid:1.2.826.0.9.{world.counter}")
    )
    sop = f"1.2.826.0.1.{world.counter}"
    world.images.setdefault(patient, set()).add(sop)
    with tempfile.TemporaryDirectory() as folder:
        path = write(
            Path(folder),
            "x.dcm",
            StudyInstanceUID=value.removeprefix("urn:oid:"),
            SeriesInstanceUID=f"1.2.826.0.2.{world.counter}",
            SOPInstanceUID=sop,
            PatientID=f"mrn-{patient}",
        )
        await Ingest(LocalTarget(world.repo)).run([path])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops)
# The attacks of the trust issue, always tried: a conditional create naming the other's study,
# a UID claimed before the other's DICOM study arrives, a study moved between the patients.
@example(script=[("create", 1, 0), ("create-if", 0, 0), ("create-if", 0, 1), ("create-if", 0, 2)])
@example(script=[("create", 0, 0), ("ingest", 0, 0), ("read", 0, 0), ("list", 0, 1)])
@example(script=[("create", 0, 0), ("move", 0, 0), ("read", 0, 1), ("list", 0, 1)])
def test_no_patient_ever_sees_the_others_studies(script: list[Op]) -> None:
    asyncio.run(_run(script))


def test_the_tokens_are_patient_confined() -> None:
    claims = jwt.decode(_tokens()["pa"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["patient"] == "pa"
