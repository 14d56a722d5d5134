"""A refused input value is answered from structure: each problem is its own error naming the
element (OperationOutcome `expression`) by the path walked, whatever kind of problem it is,
for variables and literals alike, and no more than a bounded number per input."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from graphql import parse_value

import api.errors
from api.graphql.schema import schema
from api.http.app import create_app
from api.input_errors import LITERALS, MAX_PROBLEMS, VALUES, Problem, expression, problems
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error, expressions
from tests.support.server import serving
from tests.support.websocket import init, receive, socket, subscribe

ADD = """mutation($id: ID!, $u: String!, $i: [ImagingStudySeriesInstanceInput!]!) {
  ImagingStudyAddInstances(id: $id, seriesUid: $u, instances: $i) { id } }"""
INSTANCE = schema._schema.type_map["ImagingStudySeriesInstanceInput"]


def _issues(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["extensions"]["code"], e["extensions"]["resource"]["issue"][0]["expression"][0])
        for e in body["errors"]
    ]


def test_values_and_literals_are_walked_to_the_same_problems() -> None:
    value = {"uid": 5, "sopClass": {"code": "x", "colour": "red"}, "frames": 2}
    literal = parse_value('{uid: 5, sopClass: {code: "x", colour: "red"}, frames: 2}')
    expected = [
        Problem(("uid",), "not a value of type 'String'"),
        Problem(("sopClass", "colour"), "not a field of type 'CodingInput'"),
        Problem(("frames",), "not a field of type 'ImagingStudySeriesInstanceInput'"),
    ]
    assert problems(VALUES, value, INSTANCE) == expected
    # A literal's leaf keeps its scalar's reason: it quotes the document, not data sent with it.
    reason = Problem(("uid",), "String cannot represent a non string value: 5")
    assert problems(LITERALS, literal, INSTANCE) == [reason, *expected[1:]]
    assert expression("$i", (3, "sopClass", "colour")) == "$i[3].sopClass.colour"


async def test_every_kind_of_problem_names_its_element(gql: Gql) -> None:
    study = demo.study("kinds", 1, 2)
    study["started"] = 2024  # a leaf of the wrong type: named too, not only unknown fields
    study["series"][0]["instance"][1]["frames"] = 3
    body = await gql(CREATE, res=study)
    assert _issues(body) == [
        ("BAD_USER_INPUT", "ImagingStudy.started"),
        ("BAD_USER_INPUT", "ImagingStudy.series[0].instance[1].frames"),
    ]
    body = await gql(ADD, id="kinds", u="1.2", i=[{"uid": "1.2.3"}, None])
    assert expressions(body) == ["$i[1]"]
    assert "null" in error(body)["message"]


async def test_a_literal_names_its_element_with_the_index_of_each_list(gql: Gql) -> None:
    body = await gql(
        'mutation { ImagingStudyCreate(res: {status: "registered", '
        'series: [{uid: "1.2"}, {uid: "1.3", frames: 1}]}) { id } }'
    )
    assert expressions(body) == ["ImagingStudy.series[1].frames"]
    assert "ImagingStudySeriesInput" in error(body)["message"]


async def test_a_batch_of_bad_values_is_refused_in_a_bounded_answer(gql: Gql) -> None:
    batch = [{"uid": f"1.2.{n}", "colour": "x" * 1000} for n in range(2_000)]
    body = await gql(ADD, id="kinds", u="1.2", i=batch)
    named = [e for e in body["errors"] if e["extensions"]["resource"]["issue"][0].get("expression")]
    # The first MAX_PROBLEMS, then one saying there are more (and at most graphql-core's "Too
    # many errors" besides).
    assert len(named) == MAX_PROBLEMS + 1
    assert len(body["errors"]) <= MAX_PROBLEMS + 2
    assert _issues({"errors": named})[-2] == ("BAD_USER_INPUT", f"$i[{MAX_PROBLEMS - 1}].colour")
    assert _issues({"errors": named})[-1] == ("BAD_USER_INPUT", "$i")
    assert f"more problems than the {MAX_PROBLEMS} above" in named[-1]["message"]
    assert "xxx" not in str(body)  # no value of the caller's is echoed


async def test_a_refused_variable_is_walked_again_off_the_event_loop(
    gql: Gql, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    walk = api.errors.variable_errors

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return walk(*args)

    monkeypatch.setattr(api.errors, "variable_errors", spy)
    body = await gql(ADD, id="kinds", u="1.2", i=[{"uid": "1.2.3", "frames": 1}])
    assert expressions(body) == ["$i[0].frames"]
    assert threads
    assert threading.get_ident() not in threads


async def test_a_subscription_variable_is_refused_in_the_same_form(store: Repository) -> None:
    changed = "subscription($after: String) { ImagingStudyChanged(after: $after) { id } }"
    async with serving(create_app(Settings(seed=False), store)) as address, socket(address) as ws:
        assert (await init(ws, None))["type"] == "connection_ack"
        await subscribe(ws, "1", changed, after=["position", "secret-ish"])
        message = await receive(ws)
    assert message["type"] == "error"
    [refused] = message["payload"]
    assert refused["extensions"]["code"] == "BAD_USER_INPUT"
    assert refused["extensions"]["resource"]["issue"][0]["expression"] == ["$after"]
    assert (
        refused["message"]
        == "Variable '$after' has an invalid value: not a value of type 'String'."
    )
    assert "secret-ish" not in str(refused)
