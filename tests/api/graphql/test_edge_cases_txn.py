"""Over GraphQL: dates at the calendar's edges are stored and searched or refused as
BAD_USER_INPUT (never INTERNAL_SERVER_ERROR), and a transaction Bundle whose entry fails
unexpectedly answers per-entry OperationOutcomes with every earlier write taken back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error, expressions

IMPORT = """mutation($r: JSON!) { ImagingStudyImport(resource: $r) { index status id outcome } }"""
LIST = "query($s: [String!]) { ImagingStudyList(started: $s) { id started } }"


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": copy.deepcopy(r)} for r in resources],
    }


async def test_the_last_second_of_9999_is_stored_and_found(gql: Gql) -> None:
    value = "9999-12-31T23:59:59Z"
    body = await gql(IMPORT, r=transaction(demo.study("late", 1, 1, started=value)))
    assert [r["status"] for r in body["data"]["ImagingStudyImport"]] == ["created"]
    for search in (value, "ge9999-12-31", "ap9999-12-31T23:59:59Z", "sa9999-12-31T23:59:58Z"):
        body = await gql(LIST, s=[search])
        assert body["data"]["ImagingStudyList"] == [{"id": "late", "started": value}], search


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
async def test_dates_outside_the_stored_instants_are_bad_user_input(gql: Gql, value: str) -> None:
    body = await gql(CREATE, res={**demo.study("edge", 1, 1, started=value)})
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert expressions(body) == ["ImagingStudy.started"]
    body = await gql(
        IMPORT, r=transaction(demo.study("ok", 1, 1), demo.study("edge", 1, 1, started=value))
    )
    results = body["data"]["ImagingStudyImport"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert results[1]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.started"]
    body = await gql(LIST, s=[value])
    assert error(body)["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await gql(LIST, s=None))["data"]["ImagingStudyList"] == []


async def test_an_unexpected_failure_in_a_transaction_is_undone_and_answered(
    gql: Gql, store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gql(IMPORT, r=demo.study("kept", 1, 1))

    async def broken(*_: Any) -> None:
        raise OverflowError("planted-secret-4711")

    monkeypatch.setattr(store, "create", broken)
    changed = {**demo.study("kept", 1, 1), "description": "from the transaction"}
    body = await gql(IMPORT, r=transaction(changed, demo.study("new", 1, 1)))
    assert "errors" not in body
    results = body["data"]["ImagingStudyImport"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert results[1]["outcome"]["issue"][0]["code"] == "exception"
    assert "planted-secret" not in str(body)
    monkeypatch.undo()
    study = await store.get("kept")
    assert study is not None
    assert study["description"] == demo.study("kept", 1, 1)["description"]
