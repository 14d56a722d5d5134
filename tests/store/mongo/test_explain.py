"""Every documented search parameter and sort uses an index on a real MongoDB (no collection
scan in the winning plan), and the study cache's version probe is a covered read. Needs
MONGODB_URI: the embedded store has no query planner, and scans in Python whatever it holds."""

from __future__ import annotations

import os

import pytest

from store.interop import demo
from store.mongo import indexes, paging
from store.mongo.indexes import stages
from store.mongo.repository import Repository
from store.mongo.search import PARAMETERS

server = pytest.mark.skipif(
    not os.environ.get("MONGODB_URI"),
    reason="explain() needs a real MongoDB: set MONGODB_URI (the embedded store has no planner)",
)
# A value of each documented parameter (README, Search arguments), of its kind.
VALUES = {
    "_id": "a",
    "_lastUpdated": "ge2020-01-01",
    "based-on": "ServiceRequest/1",
    "based-on:identifier": "urn:acc|A1",
    "body-site": "http://snomed.info/sct|51185008",
    "body-structure": "BodyStructure/1",
    "dicom-class": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
    "encounter": "Encounter/1",
    "endpoint": "Endpoint/wado",
    "identifier": "urn:dicom:uid|urn:oid:1.2.3",
    "instance": "1.2.3.1.1",
    "modality": "CT",
    "patient": "p1",
    "patient:identifier": "urn:mrn|M1",
    "performer": "Practitioner/1",
    "performer:identifier": "|P1",
    "reason": "http://snomed.info/sct|1",
    "referrer": "Practitioner/1",
    "referrer:identifier": "R1",
    "series": "1.2.3.1",
    "started": "ge2020-01-01",
    "status": "available",
    "subject": "Patient/p1",
    "subject:identifier": "urn:mrn|",
}
SORTS = [None, *(f"{d}{key}" for key in paging.SORT_KEYS for d in ("", "-"))]


def test_every_documented_parameter_has_a_value_here() -> None:
    assert set(VALUES) == set(PARAMETERS)


def test_stages_are_read_from_every_nesting_of_a_plan() -> None:
    plan = {
        "queryPlanner": {
            "winningPlan": {
                "stage": "SHARD_MERGE",
                "shards": [
                    {"winningPlan": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}},
                    {"winningPlan": {"stage": "COLLSCAN"}},
                ],
            },
            "rejectedPlans": [{"stage": "SORT"}],
        }
    }
    assert stages(plan) == ["SHARD_MERGE", "FETCH", "IXSCAN", "COLLSCAN"]


async def _filled(store: Repository) -> None:
    # Enough studies that the planner has something to choose between.
    for n in range(20):
        await store.create(demo.study(f"x{n}", 2, 2, patient=f"p{n % 3}"))


@server
@pytest.mark.parametrize("name", sorted(VALUES))
async def test_every_search_parameter_uses_an_index(store: Repository, name: str) -> None:
    await _filled(store)
    plan = await store.explain([(name, VALUES[name])])
    assert "COLLSCAN" not in stages(plan), (name, stages(plan))


@server
@pytest.mark.parametrize("sort", SORTS)
async def test_every_sort_uses_an_index(store: Repository, sort: str | None) -> None:
    await _filled(store)
    plan = await store.explain([], sort)
    assert "COLLSCAN" not in stages(plan), (sort, stages(plan))


@server
@pytest.mark.parametrize("subject", [None, "Patient/p1"])
async def test_the_version_probe_is_a_covered_read(store: Repository, subject: str | None) -> None:
    await _filled(store)
    plan = await store.explain([], study=("x1", subject))
    found = stages(plan)
    assert "COLLSCAN" not in found, found
    assert "FETCH" not in found, found  # answered from the probe index alone
    assert any(i.name.startswith("_id_1__srv.deleted_1") for i in indexes.INDEXES)
