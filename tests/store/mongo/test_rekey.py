"""Studies stored before the search keys changed form are given their current keys at start-up,
so a search added since finds them, with no new version, no history entry and no change event.
Runs on a real MongoDB too when MONGODB_URI is set."""

from __future__ import annotations

from typing import Any

from store.interop import demo
from store.mongo.events import from_change_stream
from store.mongo.keys import KEYS_VERSION
from store.mongo.repository import Repository

MRN = {"system": "urn:mrn", "value": "M-OLD"}


async def _stored_before_identifier_keys(store: Repository, study_id: str) -> None:
    """A study as an older version of the service stored it: no `:identifier` keys, no form."""
    study = demo.study(study_id, 1, 2)
    study["subject"] = {"reference": "Patient/old", "type": "Patient", "identifier": MRN}
    await store.create(study)
    raw: Any = store._studies  # the collection itself, as the older version left it
    doc = await raw.find_one({"_id": study_id})
    old_keys = [k for k in doc["_srv"]["k"] if not k["p"].endswith(":identifier")]
    await raw.update_one(
        {"_id": study_id}, {"$set": {"_srv.k": old_keys}, "$unset": {"_srv.kv": ""}}
    )


async def test_a_study_stored_with_older_keys_is_found_after_start_up(store: Repository) -> None:
    await _stored_before_identifier_keys(store, "old")
    by_mrn = [("patient:identifier", "urn:mrn|M-OLD")]
    assert await store.search(by_mrn, 10) == []  # what the older keys could not find
    before = await store.get("old")
    await store.ensure_indexes()  # start-up
    found = await store.search(by_mrn, 10)
    assert [s["id"] for s in found] == ["old"]
    assert found[0]["meta"] == before["meta"]  # the same version: the study did not change
    assert len(await store.history("old", 10)) == 1
    raw: Any = store._studies
    assert (await raw.find_one({"_id": "old"}))["_srv"]["kv"] == KEYS_VERSION


async def test_start_up_rewrites_nothing_on_a_current_store(store: Repository) -> None:
    await store.create(demo.study("new", 1, 1))
    await store.ensure_indexes()
    raw: Any = store._studies
    assert (await raw.find_one({"_id": "new"}))["_srv"]["kv"] == KEYS_VERSION
    assert (await store.get("new"))["meta"]["versionId"] == "1"


async def test_a_study_written_since_keeps_its_own_keys(store: Repository) -> None:
    """A write after the older keys were stored stores current keys itself; bringing keys up
    to date later changes neither its keys nor its version."""
    await _stored_before_identifier_keys(store, "moved")
    await store.set_status("moved", "cancelled", "1")
    raw: Any = store._studies
    written = (await raw.find_one({"_id": "moved"}))["_srv"]
    await store.ensure_indexes()
    assert (await raw.find_one({"_id": "moved"}))["_srv"]["k"] == written["k"]
    assert (await store.get("moved"))["meta"]["versionId"] == "2"


def test_an_update_of_the_private_keys_alone_is_no_change_event() -> None:
    doc = {**demo.study("e", 1, 1), "_id": "e", "_srv": {"deleted": False}}
    doc["meta"] = {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z"}

    def event(fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "operationType": "update",
            "fullDocument": doc,
            "updateDescription": {"updatedFields": fields, "removedFields": []},
        }

    assert from_change_stream(event({"_srv.k": [], "_srv.kv": KEYS_VERSION})) is None
    change = from_change_stream(event({"meta": doc["meta"], "_srv.lu": {}}))
    assert change is not None
    assert change.version_id == "3"
