"""A page of instances read as a page (store/mongo/pages.py, `Reads.get(instances=...)`): the
same page on both store kinds as cutting the whole study, and the aggregation's shape. The
embedded store runs the projected pipeline too (mongomock has $map, $slice, $cond and $$REMOVE,
though not $mergeObjects); with MONGODB_URI, `get` itself runs it on the server."""

from __future__ import annotations

from typing import Any

import pytest

from store.interop import demo
from store.mongo import pages
from store.mongo.reads import projection, public
from store.mongo.repository import Repository

FIELDS: list[set[str] | None] = [
    None,
    {"series"},
    {"series.uid", "series.instance.uid"},
    {"series.instance", "series.modality"},
    {"status", "series.numberOfInstances"},
    {"status"},
]


def narrow(value: Any, paths: set[str]) -> Any:
    """`value` with only the element paths in `paths` (a nested projection, list-aware)."""
    if "" in paths or not isinstance(value, dict | list):
        return value
    if isinstance(value, list):
        return [narrow(item, paths) for item in value]
    kept: dict[str, Any] = {}
    for key, item in value.items():
        below = {p[len(key) + 1 :] if p != key else "" for p in paths if p.split(".")[0] == key}
        if below:
            kept[key] = narrow(item, below)
    return kept


def expected(whole: dict[str, Any], fields: set[str] | None, offset: int, count: int) -> Any:
    paged = pages.page_of(whole, offset, count)
    return paged if fields is None else narrow(paged, {"id", "resourceType", *fields})


@pytest.fixture
async def study(store: Repository) -> dict[str, Any]:
    resource = demo.study("pg", 3, 7)
    del resource["series"][1]["instance"]  # a series without instances keeps none
    created, _ = await store.create(resource)
    return created


@pytest.mark.parametrize("fields", FIELDS)
@pytest.mark.parametrize(("offset", "count"), [(0, 2), (2, 3), (6, 5), (9, 1)])
async def test_a_page_is_the_whole_study_cut(
    store: Repository,
    study: dict[str, Any],
    fields: set[str] | None,
    offset: int,
    count: int,
) -> None:
    got = await store.get("pg", fields, instances=(offset, count))
    assert got is not None
    want = expected(study, fields, offset, count)
    if fields is not None:
        # The embedded store reads a superset of the asked elements (top-level projection).
        got = narrow(got, {"id", "resourceType", *fields})
    assert got == want


async def test_a_page_keeps_the_subject_condition(store: Repository, study: dict[str, Any]) -> None:
    subject = study["subject"]["reference"]
    assert await store.get("pg", None, "Patient/other", instances=(0, 1)) is None
    assert await store.get("pg", None, subject, instances=(0, 1)) is not None
    await store.delete("pg", None)
    assert await store.get("pg", None, subject, instances=(0, 1)) is None


async def test_the_kept_study_is_not_cut(store: Repository, study: dict[str, Any]) -> None:
    await store.get("pg", instances=(0, 1))
    whole = await store.get("pg")
    assert whole is not None
    assert [len(s.get("instance", ())) for s in whole["series"]] == [7, 0, 7]


@pytest.mark.parametrize("fields", [f for f in FIELDS if f is not None and "series" not in f])
async def test_the_projected_pipeline_gives_the_page(
    store: Repository, study: dict[str, Any], fields: set[str]
) -> None:
    steps = pages.pipeline({"_id": "pg"}, projection(fields), 2, 3)
    [found] = await store._studies.aggregate(steps).to_list(1)
    assert public(found) == expected(study, fields, 2, 3)


def test_the_pipeline_sends_only_the_page() -> None:
    steps = pages.pipeline(
        {"_id": "x"}, projection({"series.uid", "series.instance.uid"}), 2000, 100
    )
    assert steps[:2] == [{"$match": {"_id": "x"}}, {"$limit": 1}]
    project = steps[2]["$project"]
    assert project["_id"] == 0
    assert project["id"] == 1
    each = project["series"]["$cond"][1]["$map"]
    assert each["input"] == "$series"
    assert each["in"]["uid"] == "$$s.uid"
    paged = each["in"]["instance"]["$cond"][1]["$map"]
    assert paged["input"] == {"$slice": ["$$s.instance", 2000, 100]}
    assert paged["in"] == {"uid": "$$i.uid"}


def test_the_whole_study_pipeline_merges_the_page_into_each_series() -> None:
    steps = pages.pipeline({"_id": "x"}, None, 10, None)
    assert steps[2] == {"$project": {"_srv": 0}}
    series = steps[3]["$set"]["series"]["$cond"][1]["$map"]["in"]
    merged = series["$cond"][1]["$mergeObjects"]
    assert merged[0] == "$$s"
    assert merged[1]["instance"]["$slice"][:2] == ["$$s.instance", 10]


def test_a_page_holds_at_least_one_instance() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pages.pipeline({"_id": "x"}, None, 0, 0)
