"""Bundles carry only what import does: R5 elements, create-or-update requests, and one entry
per study in a transaction; anything else is refused, not ignored."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from store.fhir.outcome import StoreError
from store.interop import demo
from store.interop.importer import Importer
from store.mongo.repository import Repository


def bundle(kind: str, *entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries), **extra}


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (bundle("batch", bogus=1), "Bundle.bogus"),
        ({"resourceType": "Bundle", "type": "batch", "entry": {}}, "Bundle.entry"),
        (bundle("batch", {"resource": demo.study("a", 1, 1), "bogus": 1}), "Bundle.entry[0].bogus"),
        (
            bundle("batch", {"resource": demo.study("a", 1, 1), "request": {"method": "DELETE"}}),
            "Bundle.entry[0].request.method",
        ),
        (
            bundle(
                "batch",
                {
                    "resource": demo.study("a", 1, 1),
                    "request": {"method": "PUT", "ifMatch": 'W/"9"'},
                },
            ),
            "Bundle.entry[0].request.ifMatch",
        ),
        (
            bundle(
                "transaction",
                {
                    "resource": demo.study("a", 1, 1),
                    "request": {"method": "PUT", "url": "ImagingStudy/b"},
                },
            ),
            "Bundle.entry[0].request.url",
        ),
    ],
)
async def test_what_import_does_not_do_is_refused(
    store: Repository, payload: dict[str, Any], where: str
) -> None:
    with pytest.raises(StoreError) as refused:
        await Importer(store).run(payload)
    assert refused.value.issues[0].expression == where
    assert await store.search([], 10) == []


async def test_a_request_url_naming_the_entry_is_accepted(store: Repository) -> None:
    study = demo.study("a", 1, 1)
    results = await Importer(store).run(
        bundle(
            "transaction",
            {"resource": study, "request": {"method": "PUT", "url": "ImagingStudy/a"}},
        )
    )
    assert [r.status for r in results] == ["created"]


async def test_one_transaction_writes_a_study_once(store: Repository) -> None:
    first = demo.study("tw", 1, 1)
    second = {**copy.deepcopy(first), "id": "other", "description": "again"}
    results = await Importer(store).run(
        bundle("transaction", {"resource": first}, {"resource": second})
    )
    assert [r.status for r in results] == ["rejected", "rejected"]
    assert "also entry 0's" in results[1].outcome["issue"][0]["diagnostics"]
    assert await store.search([], 10) == []
    assert await store.history("tw", 10) == []
