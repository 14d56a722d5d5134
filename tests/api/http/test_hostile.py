"""A corpus of hostile requests: wrong types, huge and odd strings, deep nesting, unicode edge
cases, NUL bytes, operator-shaped values and names, oversized batches and bodies, foreign and
tampered cursors, malformed documents. Each gets a clean client error (a client code, or HTTP
400/405/413), and the store is byte-for-byte what it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE

CLIENT_CODES = {
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "VERSION_CONFLICT",
    "INVALID_STATUS_TRANSITION",
    "QUERY_REJECTED",
}
MUTATIONS = {
    "create": ("mutation($v: ImagingStudyInput!) { ImagingStudyCreate(res: $v) { id } }", "v"),
    "update": (
        'mutation($v: ImagingStudyInput!) { ImagingStudyUpdate(id: "s", res: $v) { id } }',
        "v",
    ),
    "status": ('mutation($v: String!) { ImagingStudySetStatus(id: "s", status: $v) { id } }', "v"),
    "add-series": (
        'mutation($v: [ImagingStudySeriesInput!]!) { ImagingStudyAddSeries(id: "s",'
        " series: $v) { id } }",
        "v",
    ),
    "add-instances": (
        "mutation($v: [ImagingStudySeriesInstanceInput!]!) { "
        f'ImagingStudyAddInstances(id: "s", seriesUid: "{demo.uid("s", 1)}", '
        "instances: $v) { id } }",
        "v",
    ),
    "remove-series": (
        'mutation($v: [String!]!) { ImagingStudyRemoveSeries(id: "s", uids: $v) { id } }',
        "v",
    ),
    "import": ("mutation($v: JSON!) { ImagingStudyImport(resource: $v) { status } }", "v"),
    "delete": (
        'mutation($v: String) { ImagingStudyDelete(id: "s", versionId: $v) { deleted } }',
        "v",
    ),
}
WRONG_TYPES: list[Any] = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "x" * 70,
    [],
    [None],
    {},
    {"$ne": 1},
    {"$where": "sleep(1000)"},
    [{"$gt": ""}],
    "\x00",
    "\ud800",
]
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\u202etxt",
    "😀" * 10,
    "\n\t",
    "x" * (1024 * 1024 + 1),
    "$where",
    '{"$ne": null}',
    "a.b",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
]


def study(**changes: Any) -> dict[str, Any]:
    return {**demo.study("h", 1, 1), **changes}


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


def corpus() -> Iterator[tuple[str, dict[str, Any] | bytes]]:
    for name, (query, var) in MUTATIONS.items():
        for n, value in enumerate(WRONG_TYPES):
            if name in ("delete", "status") and (value is None or isinstance(value, str)):
                continue  # a well-typed (or absent) versionId or status: covered below
            if value == [] and name.startswith(("add", "remove")):
                continue  # an empty batch is a well-formed no-op
            yield f"{name}: wrong value {n}", {"query": query, "variables": {var: value}}
    for n, text in enumerate(ODD_STRINGS):
        yield (
            f"odd description {n}",
            {"query": CREATE, "variables": {"res": study(description=text, status="bogus")}},
        )
        yield (
            f"odd uid {n}",
            {
                "query": CREATE,
                "variables": {"res": study(series=[{**demo.series("h", 1, 1), "uid": text}])},
            },
        )
        yield f"odd status {n}", {"query": MUTATIONS["status"][0], "variables": {"v": text}}
        yield f"odd versionId {n}", {"query": MUTATIONS["delete"][0], "variables": {"v": text}}
        if text != "a.b":  # a valid FHIR id
            yield f"odd id {n}", {"query": CREATE, "variables": {"res": study(id=text)}}
    for key in ("$where", "$ne", "a.b", "$", ".", "x.$y"):
        yield (
            f"contained name {key}",
            {
                "query": CREATE,
                "variables": {
                    "res": study(contained=[{"resourceType": "Patient", "id": "p", key: 1}])
                },
            },
        )
        yield (
            f"import name {key}",
            {"query": MUTATIONS["import"][0], "variables": {"v": {**study(), key: 1}}},
        )
        yield (
            f"extension value name {key}",
            {
                "query": CREATE,
                "variables": {
                    "res": study(extension=[{"url": "http://x", "valueQuantity": {key: 1}}])
                },
            },
        )
    for levels in (50, 500):
        yield (
            f"deep JSON {levels}",
            {"query": MUTATIONS["import"][0], "variables": {"v": _deep(levels)}},
        )
    yield (
        "deep query",
        {
            "query": '{ ImagingStudy(id: "s") { '
            + "identifier { assigner { " * 20
            + "display"
            + " } }" * 20
            + " } }"
        },
    )
    yield (
        "many aliases",
        {
            "query": "{ "
            + " ".join(f'a{n}: ImagingStudy(id: "{n}") {{ id }}' for n in range(100))
            + " }"
        },
    )
    yield (
        "batch of 10,001",
        {
            "query": MUTATIONS["add-instances"][0],
            "variables": {"v": [demo.instance("s", 1, n) for n in range(10_001)]},
        },
    )
    yield "10 MB body", b'{"query": "{ __typename }", "x": "' + b"x" * (10 * 2**20) + b'"}'
    yield "not JSON", b"{ not json"
    yield "bad UTF-8", b'{"query": "\xff\xfe"}'
    yield "array body", b'[{"query": "{ __typename }"}, {"query": "{ __typename }"}]'
    yield "empty body", b""
    for n, query in enumerate(
        [
            "",
            "{",
            "}",
            "query {",
            "{ ImagingStudy }",
            "{ nonsense }",
            "mutation { nonsense }",
            'fragment f on ImagingStudy { ...f } { ImagingStudy(id: "s") { ...f } }',
            "\x00",
            "subscription { ImagingStudyChanged { id } }",
        ]
    ):
        yield f"malformed document {n}", {"query": query}
    yield "query not a string", {"query": 42}
    yield "variables not an object", {"query": CREATE, "variables": "res"}
    yield "unknown operation name", {"query": "query a { __typename }", "operationName": "b"}
    for n, cursor in enumerate(["", "x", "A" * 500, "eyJxIjoxfQ", "🦄"]):
        yield (
            f"tampered cursor {n}",
            {
                "query": "query($c: String) { ImagingStudyConnection(_cursor: $c) { count } }",
                "variables": {"c": cursor},
            },
        )
    for name in ("started", "_lastUpdated"):
        for value in ("ge", "2024-13", "xx2024", "2024-02-30T25:00Z", ""):
            yield (
                f"bad {name} {value}",
                {"query": f'{{ ImagingStudyList({name}: "{value}") {{ id }} }}'},
            )
    for name in ("patient", "subject", "based_on", "performer"):
        yield (
            f"wrong target {name}",
            {"query": f'{{ ImagingStudyList({name}: "Location/1") {{ id }} }}'},
        )
    for count in (0, -1, 10**9):
        yield f"_count {count}", {"query": f"{{ ImagingStudyList(_count: {count}) {{ id }} }}"}
        yield (
            f"nested _count {count}",
            {
                "query": f'{{ ImagingStudy(id: "s") {{ series {{ '
                f"instance(_count: {count}) {{ uid }} }} }} }}"
            },
        )
    yield from _trust_cases()
    yield "foreign cursor", None  # filled in by the test: a real cursor from another query


def _trust_cases() -> Iterator[tuple[str, dict[str, Any] | bytes]]:
    """The cheap attacks and the half-writes of the trust issue: each is refused whole."""
    fragments = (
        " ".join(
            f"fragment F{n} on ImagingStudy {{ " + " ".join([f"...F{n + 1}"] * 10) + " }"
            for n in range(7)
        )
        + " fragment F7 on ImagingStudy { id }"
    )
    yield "fragment bomb", {"query": '{ ImagingStudy(id: "s") { ...F0 } } ' + fragments}
    yield (
        "history fhirJson aliases",
        {
            "query": "{ "
            + " ".join(f'h{n}: ImagingStudyHistory(id: "s") {{ fhirJson }}' for n in range(6))
            + " }"
        },
    )
    yield (
        "series aliases",
        {
            "query": "{ "
            + " ".join(
                f'a{n}: ImagingStudy(id: "s") '
                "{ series { instance { uid sopClass { code } } } }"
                for n in range(30)
            )
            + " }"
        },
    )
    yield (
        "variable default",
        {
            "query": "query($c: Int = 1000) { ImagingStudyList(_count: $c)"
            " { series { instance { uid } } } }"
        },
    )
    yield (
        "200,000 OR values",
        {
            "query": "query($v: [String!]) { ImagingStudyList(_id: $v) { id } }",
            "variables": {"v": [",".join(str(n) for n in range(200_000))]},
        },
    )
    yield (
        "long search value",
        {
            "query": "query($v: [String!]) { ImagingStudyList(identifier: $v) { id } }",
            "variables": {"v": ["x" * 5_000]},
        },
    )
    yield "7 MB query", {"query": "{ " + "__typename " * 700_000 + "}"}
    yield "two operations, no name", {"query": "query a { __typename } query b { __typename }"}
    for started in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "0000"):
        yield (
            f"edge date {started}",
            {"query": CREATE, "variables": {"res": study(id="edge", started=started)}},
        )
        yield (
            f"edge search {started}",
            {"query": f'{{ ImagingStudyList(started: "ge{started}") {{ id }} }}'},
        )
    for n, bad_id in enumerate([None, 7, ["a"], {"x": 1}]):
        yield (
            f"import id {n}",
            {"query": MUTATIONS["import"][0], "variables": {"v": {**study(), "id": bad_id}}},
        )
    yield (
        "transaction failing at its last entry",
        {
            "query": MUTATIONS["import"][0],
            "variables": {
                "v": {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {"resource": study(id="t1")},
                        {"resource": {**study(id="t2"), "status": "bogus"}},
                    ],
                }
            },
        },
    )
    yield (
        "a second study with a taken UID",
        {
            "query": CREATE,
            "variables": {
                "res": {
                    **demo.study("copy", 1, 1),
                    "identifier": demo.study("s", 1, 1)["identifier"],
                }
            },
        },
    )


async def snapshot(store: Repository) -> bytes:
    documents = {}
    for name in ("imaging_study", "imaging_study_history", "imaging_study_claims"):
        docs = await store._db[name].find({}).sort("_id", 1).to_list(length=None)
        documents[name] = docs
    return orjson.dumps(documents, default=str, option=orjson.OPT_SORT_KEYS)


CASES = list(corpus())


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 200


@pytest.mark.parametrize(("name", "payload"), CASES, ids=[name for name, _ in CASES])
async def test_hostile_request(
    http: httpx.AsyncClient, store: Repository, name: str, payload: Any
) -> None:
    await store.create(demo.study("s", 1, 1))
    if payload is None:  # a cursor minted for one query, sent with another
        first = await http.post(
            "/graphql", json={"query": "{ ImagingStudyConnection(_count: 1) { next } }"}
        )
        cursor = first.json()["data"]["ImagingStudyConnection"]["next"] or "none"
        payload = {
            "query": 'query($c: String) { ImagingStudyConnection(modality: "CT", '
            "_cursor: $c) { count } }",
            "variables": {"c": cursor},
        }
    before = await snapshot(store)
    if isinstance(payload, bytes):
        response = await http.post(
            "/graphql", content=payload, headers={"content-type": "application/json"}
        )
    else:
        response = await http.post(
            "/graphql", content=json.dumps(payload), headers={"content-type": "application/json"}
        )
    if response.status_code == 200:
        body = response.json()
        imported = (body.get("data") or {}).get("ImagingStudyImport")
        if imported is not None:  # an import refuses entry by entry
            assert {r["status"] for r in imported} == {"rejected"}, name
            assert await snapshot(store) == before, f"{name} changed the store"
            return
        assert body.get("errors"), f"{name}: accepted: {str(body)[:300]}"
        codes = {e.get("extensions", {}).get("code") for e in body["errors"]}
        assert codes <= CLIENT_CODES, f"{name}: {codes}"
    else:
        assert response.status_code in (400, 405, 413), (name, response.status_code)
    assert await snapshot(store) == before, f"{name} changed the store"
