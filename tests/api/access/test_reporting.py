"""What a response says is what happened: a fault in one import entry or in the audit never
turns committed writes into an error a client would retry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.access.scoped import ScopedStore
from store.fhir import edit
from store.mongo.repository import Repository
from tests.support.graphql import call
from tests.support.tokens import new_study, token

IMPORT = "mutation($r: JSON!) { ImagingStudyImport(resource: $r) { status id outcome } }"
BOTH = """mutation($r: JSON!, $d: ID!) { ImagingStudyImport(resource: $r) { status id }
  ImagingStudyDelete(id: $d) { deleted } }"""


def batch(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": r} for r in resources],
    }


async def test_an_unexpected_fault_in_one_entry_keeps_the_others_reported(
    client: httpx.AsyncClient, store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = edit.create

    def flaky(resource: dict[str, Any], *limits: int) -> dict[str, Any]:
        if resource.get("description") == "boom":
            raise OverflowError("date value out of range")
        return real(resource, *limits)

    monkeypatch.setattr(edit, "create", flaky)
    body = await call(
        client,
        token("user/ImagingStudy.cruds"),
        IMPORT,
        r=batch(
            new_study("a", "p1"),
            new_study("b", "p1") | {"description": "boom"},
            new_study("c", "p1"),
        ),
    )
    assert "errors" not in body, body
    first, second, third = body["data"]["ImagingStudyImport"]
    assert [first["status"], second["status"], third["status"]] == [
        "created",
        "rejected",
        "created",
    ]
    assert second["outcome"]["issue"][0]["code"] == "exception"
    assert "date value" not in str(second)  # no raw text of the fault
    assert await store.get(first["id"]) is not None


async def test_a_failing_audit_record_fails_no_request(
    client: httpx.AsyncClient,
    store: Repository,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def odd(self: ScopedStore, study: dict[str, Any] | None) -> None:
        self.touched.append((["not", "an", "id"], None))  # type: ignore[arg-type]

    monkeypatch.setattr(ScopedStore, "_touch", odd)
    with caplog.at_level("INFO", logger="imaging.audit"):
        body = await call(
            client, token("user/ImagingStudy.cruds"), BOTH, r=new_study("d", "p1"), d="mine"
        )
    assert "errors" not in body, body
    assert body["data"]["ImagingStudyDelete"]["deleted"] is True
    assert await store.get("mine") is None
    [record] = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert record["code"]["text"] == "ImagingStudyImport,ImagingStudyDelete"
    assert {"text": "audit-incomplete"} in record["outcome"]["detail"]


async def test_an_input_error_does_not_echo_the_input_back(client: httpx.AsyncClient) -> None:
    resource = new_study("echo", "p1") | {"extension": [{"url": "http://x", "valueIntegr": 1}]}
    body = await call(
        client,
        token("user/ImagingStudy.cruds"),
        "mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id } }",
        r=resource,
    )
    message = body["errors"][0]["message"]
    assert "valueIntegr" in message
    assert "http://x" not in message
