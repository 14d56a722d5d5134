"""Authentication (bearer JWTs) and authorization (SMART on FHIR v2 scopes): every scope x
operation pair, and patient confinement through every read and write path."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.access.auth import grants
from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import call, codes
from tests.support.tokens import new_study, study, token


def _series(uid: str) -> dict[str, Any]:
    return demo.series("x", 9, 1) | {"uid": uid}


OPERATIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # name: (letters it needs, query, variables) - each on study "mine" of patient p1. A write
    # that answers with the study needs `r` as well; an import matches by searching (`rs`).
    "read": ("r", '{ ImagingStudy(id: "mine") { id } }', {}),
    "history": ("r", '{ ImagingStudyHistory(id: "mine") { id } }', {}),
    "list": ("rs", "{ ImagingStudyList { id } }", {}),
    "connection": ("rs", "{ ImagingStudyConnection { count } }", {}),
    "create": (
        "c",
        "mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id } }",
        {"r": new_study("new", "p1")},
    ),
    "update": (
        "ru",
        'mutation($r: ImagingStudyInput!) { ImagingStudyUpdate(id: "mine", res: $r) { id } }',
        {"r": {**study("mine", "p1"), "description": "changed"}},
    ),
    "delete": ("d", 'mutation { ImagingStudyDelete(id: "mine") { deleted } }', {}),
    "status": (
        "ru",
        'mutation { ImagingStudySetStatus(id: "mine", status: "cancelled") { id } }',
        {},
    ),
    "add-series": (
        "ru",
        "mutation($s: [ImagingStudySeriesInput!]!) { ImagingStudyAddSeries("
        'id: "mine", series: $s) { id } }',
        {"s": [_series("7.7")]},
    ),
    "add-instances": (
        "ru",
        "mutation($i: [ImagingStudySeriesInstanceInput!]!, $u: String!) { "
        'ImagingStudyAddInstances(id: "mine", seriesUid: $u, instances: $i) '
        "{ id } }",
        {"u": demo.uid("mine", 1), "i": [demo.instance("m", 1, 5)]},
    ),
    "remove-series": (
        "ru",
        'mutation($u: [String!]!) { ImagingStudyRemoveSeries(id: "mine", uids: $u) { id } }',
        {"u": ["0.0"]},
    ),
    "remove-instances": (
        "ru",
        "mutation($s: String!, $u: [String!]!) { "
        'ImagingStudyRemoveInstances(id: "mine", seriesUid: $s, uids: $u) '
        "{ id } }",
        {"s": demo.uid("mine", 1), "u": ["0.0"]},
    ),
    "import": (
        "crus",
        "mutation($r: JSON!) { ImagingStudyImport(resource: $r) { status } }",
        {"r": new_study("imported", "p1")},
    ),
}
SCOPES = {
    "system/ImagingStudy.cruds": "cruds",
    "system/*.*": "cruds",
    "user/*.r": "r",
    "user/ImagingStudy.rs": "rs",
    "system/ImagingStudy.c": "c",
    "user/ImagingStudy.u": "u",
    "system/ImagingStudy.d": "d",
    "user/ImagingStudy.read": "rs",
    "user/ImagingStudy.write": "cud",
    "user/ImagingStudy.cu": "cu",
    "patient/ImagingStudy.cruds": "cruds",
    "patient/ImagingStudy.rs": "rs",
    "system/ImagingStudy.rc": "",
    "Patient/ImagingStudy.r": "",
    "user/Observation.cruds": "",
    "user/ImagingStudy.r?category=x": "",
    "": "",
    "system/ImagingStudy.": "",
}


@pytest.mark.parametrize("scope", SCOPES)
def test_scope_grants(scope: str) -> None:
    open_, confined = grants(scope)
    assert "".join(sorted(open_ | confined, key="cruds".index)) == SCOPES[scope]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("scope", SCOPES)
async def test_scope_operation_pair(
    client: httpx.AsyncClient, store: Repository, scope: str, operation: str
) -> None:
    letters, query, variables = OPERATIONS[operation]
    before = await store.get("mine")
    body = await call(client, token(scope, patient="p1"), query, **copy.deepcopy(variables))
    if all(letter in SCOPES[scope] for letter in letters):
        assert not codes(body) & {"FORBIDDEN", "UNAUTHENTICATED"}, body
    else:
        assert codes(body) == {"FORBIDDEN"}, body
        assert body["data"] is None or all(v is None for v in body["data"].values())
        assert await store.get("mine") == before


CONFINED = "patient/ImagingStudy.cruds"


async def test_patient_confinement_on_reads(client: httpx.AsyncClient) -> None:
    bearer = token(CONFINED, patient="p1")
    body = await call(
        client,
        bearer,
        '{ a: ImagingStudy(id: "theirs") { id } '
        'b: ImagingStudy(id: "mine") { id } '
        "c: ImagingStudyList { id } "
        'd: ImagingStudyList(patient: "p2") { id } '
        "e: ImagingStudyConnection { count edges { resource "
        "{ id } } } "
        'f: ImagingStudyHistory(id: "theirs") { id } }',
    )
    assert body["data"] == {
        "a": None,
        "b": {"id": "mine"},
        "c": [{"id": "mine"}],
        "d": [],
        "e": {"count": 1, "edges": [{"resource": {"id": "mine"}}]},
        "f": [],
    }


@pytest.mark.parametrize(
    "operation",
    [
        op
        for op in OPERATIONS
        if op not in ("read", "history", "list", "connection", "create", "import")
    ],
)
async def test_patient_confinement_on_writes(
    client: httpx.AsyncClient, store: Repository, operation: str
) -> None:
    """Writing to another patient's study answers exactly what writing to a missing id does:
    no existence oracle, and no version number (even when a wrong versionId is sent)."""
    _, query, variables = OPERATIONS[operation]
    answers = []
    for target in ("theirs", "ghost"):
        aimed = query.replace('"mine"', f'"{target}"').replace(
            'id: "', 'versionId: "7", id: "' if target else ""
        )
        values = json.loads(
            json.dumps(variables)
            .replace(demo.uid("mine", 1), demo.uid("theirs", 1))
            .replace('"mine"', f'"{target}"')
        )
        before = await store.get("theirs")
        body = await call(client, token(CONFINED, patient="p1"), aimed, **values)
        assert codes(body) == {"NOT_FOUND"}, body
        assert await store.get("theirs") == before
        answers.append(json.dumps(body).replace(target, "X"))
    assert answers[0] == answers[1]


async def test_patient_confinement_on_create_update_and_import(
    client: httpx.AsyncClient, store: Repository
) -> None:
    bearer = token(CONFINED, patient="p1")
    create = OPERATIONS["create"][1]
    assert codes(await call(client, bearer, create, r=study("other", "p2"))) == {"FORBIDDEN"}
    update = OPERATIONS["update"][1]
    moved = {**study("mine", "p2"), "description": "moved to another patient"}
    assert codes(await call(client, bearer, update, r=moved)) == {"FORBIDDEN"}
    body = await call(
        client,
        bearer,
        OPERATIONS["import"][1],
        r={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": new_study("ok", "p1")}, {"resource": study("no", "p2")}],
        },
    )
    assert [r["status"] for r in body["data"]["ImagingStudyImport"]] == ["created", "rejected"]
    assert await store.get("no") is None
    assert codes(await call(client, token(CONFINED), "{ ImagingStudyList { id } }")) == {
        "FORBIDDEN"
    }  # a patient scope without a patient claim grants nothing


@pytest.mark.parametrize(
    "claim", ["p1/_history/1", "Patient/p1", "http://example.org/fhir/Patient/p1", ".*", "p 1"]
)
async def test_a_patient_claim_that_is_not_a_fhir_id_grants_nothing(
    client: httpx.AsyncClient, store: Repository, claim: str
) -> None:
    """The confined search would read such a claim as a reference (`Patient/p1` matched p1's
    studies) while reads take it as an id: the paths disagreed (found black-box)."""
    await store.create(study("p1s", "p1"))
    body = await call(client, token(CONFINED, patient=claim), "{ ImagingStudyList { id } }")
    assert codes(body) == {"FORBIDDEN"}, body


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "expired", "audience", "issuer", "not-yet", "signature", "no-exp"],
)
async def test_bad_tokens_are_unauthenticated(client: httpx.AsyncClient, case: str) -> None:
    scope = "system/*.*"
    bearer = {
        "missing": None,
        "garbage": "not.a.jwt",
        "expired": token(scope, exp=int(time.time()) - 60),
        "audience": token(scope, aud="someone-else"),
        "issuer": token(scope, iss="https://elsewhere"),
        "not-yet": token(scope, nbf=int(time.time()) + 600),
        "signature": token(scope, key="another-secret-of-32-bytes-or-more"),
        "no-exp": token(scope, exp=None),
    }[case]
    body = await call(client, bearer, '{ ImagingStudy(id: "mine") { id } }')
    assert codes(body) == {"UNAUTHENTICATED"}


@pytest.mark.parametrize(
    ("bearer", "said"),
    [
        ("abc.def.ghi", "not a well-formed JWT"),
        ("not-a-jwt", "not a well-formed JWT"),
        (token("system/*.*", key="another-secret-of-32-bytes-or-more"), "Signature verification"),
        (token("system/*.*", exp=int(time.time()) - 60), "expired"),
    ],
)
async def test_a_bad_token_is_told_in_the_callers_terms(
    client: httpx.AsyncClient, bearer: str, said: str
) -> None:
    """Not a decoder's internals ('utf-8' codec can't decode byte 0xb7...)."""
    message = (await call(client, bearer, "{ ImagingStudyList { id } }"))["errors"][0]["message"]
    assert said in message
    assert "codec" not in message
    assert "byte" not in message


def _pem(private: Any, tmp_path: Path) -> str:
    path = tmp_path / "key.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


async def _works_with(store: Repository, settings: Settings, bearer: str) -> dict[str, Any]:
    app = create_app(settings, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        return await call(http, bearer, "{ ImagingStudyList { id } }")


async def test_rs256_public_key_and_es256_jwks(store: Repository, tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = Settings(seed=False, auth="jwt", jwt_public_key=_pem(rsa_key, tmp_path))
    body = await _works_with(store, settings, token("user/*.rs", rsa_key, "RS256", aud=None))
    assert "errors" not in body
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    settings = Settings(seed=False, auth="jwt", jwt_jwks=str(tmp_path / "jwks.json"))
    body = await _works_with(
        store, settings, token("user/*.rs", ec_key, "ES256", aud=None, kid="k1")
    )
    assert "errors" not in body
    body = await _works_with(
        store, settings, token("user/*.rs", rsa_key, "RS256", aud=None, kid="k1")
    )
    assert codes(body) == {"UNAUTHENTICATED"}
