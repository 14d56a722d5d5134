"""The embedded store's compiled reads (store/mongo/client.py over matcher.py and ordering.py)
on the filters the search module itself builds: the same ids, in the same order, as mongomock's
own reads of the same collection; what a caller changes in a result never reaches the store;
a write is seen by the next search, whichever write path made it."""

from __future__ import annotations

import asyncio
import copy
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.mongo import client, indexes, paging, search
from store.mongo.repository import Repository
from tests.support import search_data

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")),
    reason="checks the embedded store; with MONGODB_URI the tests use motor",
)

VALUES = [
    (row[0], value)
    for row in [*search_data.TABLE, *search_data.IDENTIFIER_TABLE]
    for value in row[1:4]
]
FILTERABLE = [(n, v) for n, v in VALUES if ":" not in n]
PARAMS = st.lists(
    st.one_of(
        st.sampled_from(VALUES),
        st.lists(st.sampled_from(FILTERABLE), min_size=1, max_size=3).flatmap(
            lambda tests: st.sampled_from([" and ", " or "]).map(
                lambda op: (
                    "_filter",
                    op.join(search.filter_comparison(n, v) for n, v in tests),
                )
            )
        ),
        st.sampled_from(FILTERABLE).map(
            lambda t: ("_filter", f"not ({search.filter_comparison(*t)})")
        ),
        st.sampled_from(["ge2023", "lt2025-01-01", "ne2024-03-05", "sa2020"]).map(
            lambda v: ("_lastUpdated" if v.startswith("lt") else "started", v)
        ),
    ),
    max_size=3,
)
SORTS = st.sampled_from([None, "-started", "started", "_id", "-_lastUpdated", "status,-_id"])


async def _stored() -> tuple[Any, Repository]:
    handle, db = client.open_embedded("builders")
    repo = Repository(db)
    await repo.ensure_indexes()
    for study in search_data.STUDIES:
        await repo.create(copy.deepcopy(study))
    assert "started" not in search_data.C  # sorts by `started` meet a missing one
    await repo.create({**copy.deepcopy(search_data.C), "id": "gone"})
    await repo.delete("gone", None)
    return handle, repo


async def _agree(params: list[tuple[str, str]], sort: str | None, skip: int, after: bool) -> None:
    handle, repo = await _stored()
    ours = repo._db[indexes.STUDIES]
    theirs = client._driver(repo._db)[indexes.STUDIES]
    spec = paging.sort_spec(sort)
    query = search.to_filter(params)
    if after:  # a keyset page's filter, after the first study in this order
        first = await theirs.find(search.LIVE).sort(spec).limit(1).to_list(None)
        query = {"$and": [query, paging.after(spec, paging.boundary(first[0], spec))]}
    fields = {"id": 1, "_srv.sort": 1, "status": 1}
    expected = await theirs.find(query, fields).sort(spec).skip(skip).limit(3).to_list(None)
    found = await ours.find(query, fields).sort(spec).skip(skip).limit(3).to_list(None)
    assert [d["_id"] for d in found] == [d["_id"] for d in expected], (params, sort)
    assert found == [{k: d[k] for k in d if k in ("_id", "id", "_srv", "status")} for d in found]
    for bounds in ({}, {"skip": skip}, {"skip": skip, "limit": 1}):
        assert await ours.count_documents(query, **bounds) == await theirs.count_documents(
            query, **bounds
        )
    client.close(handle)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=PARAMS, sort=SORTS, skip=st.integers(0, 2), after=st.booleans())
def test_the_search_modules_filters_agree_with_mongomock(
    params: list[tuple[str, str]], sort: str | None, skip: int, after: bool
) -> None:
    asyncio.run(_agree(params, sort, skip, after))


async def test_a_result_changed_by_its_caller_leaves_the_store_unchanged(
    store: Repository,
) -> None:
    for study in search_data.STUDIES:
        await store.create(copy.deepcopy(study))
    params = [("patient", "p1")]
    before = await store.search(params, 10)
    found = await store.search(params, 10)
    found[0]["subject"]["reference"] = "Patient/changed"
    found[0]["series"][0]["instance"].clear()
    found[0]["identifier"].append({"value": "x"})
    assert await store.search(params, 10) == before
    raw = await store._db[indexes.STUDIES].find({"_id": "a"}).to_list(None)
    raw[0]["_srv"]["k"].clear()
    assert await store.count(params) == 1
    one = await store._db[indexes.STUDIES].find_one({"_id": "a"}, {"_srv.k": 1})
    one["_srv"]["k"].clear()
    assert await store.count(params) == 1


async def test_a_search_sees_each_write(store: Repository) -> None:
    await store.create(copy.deepcopy(search_data.A))
    series = search_data.A["series"][0]["uid"]
    new = {"uid": "1.2.3.1.99", "sopClass": {"system": "urn:ietf:rfc:3986", "code": "urn:oid:9"}}
    assert await store.count([("instance", "1.2.3.1.99")]) == 0
    await store.add_instances("a", series, [new], None)  # the embedded update's own path
    assert await store.count([("instance", "1.2.3.1.99")]) == 1
    assert await store.count([("dicom-class", "urn:oid:9")]) == 1
    assert [s["id"] for s in await store.search([("status", "cancelled")], 10)] == []
    await store.set_status("a", "cancelled", None)  # a compare-and-set replace
    assert [s["id"] for s in await store.search([("status", "cancelled")], 10)] == ["a"]
    await store.delete("a", None)
    assert await store.count([("instance", "1.2.3.1.99")]) == 0


async def test_a_search_after_a_bare_update_sees_it(store: Repository) -> None:
    """The key index (store/mongo/keyindex.py) built by one search is not used by the next
    after any write, even an embedded update alone (no history insert beside it)."""
    await store.create(copy.deepcopy(search_data.A))
    studies = store._db[indexes.STUDIES]
    key = {"_srv.k": {"$elemMatch": {"p": "modality", "c": "XA"}}}
    assert await studies.count_documents(key) == 0  # builds the index
    added = {"$push": {"_srv.k": {"p": "modality", "c": "XA", "s": ""}}}
    assert await studies.find_one_and_update({"_id": "a"}, added, return_document=client.AFTER)
    assert await studies.count_documents(key) == 1
    assert [d["_id"] for d in await studies.find(key, {"_id": 1}).to_list(None)] == ["a"]
    await studies.update_one({"_id": "a"}, {"$pull": {"_srv.k": {"c": "XA"}}})
    assert await studies.count_documents(key) == 0
    await studies.insert_one(
        {"_id": "n", "_srv": {"deleted": False, "k": [{"p": "modality", "c": "XA"}]}}
    )
    assert await studies.count_documents(key) == 1
    await studies.delete_many({})
    assert await studies.count_documents(key) == 0
