"""The embedded store's compiled reads (store/mongo/matcher.py, ordering.py, behind client.py)
against mongomock's own, differentially: random documents (nested documents, arrays of
documents and scalars, missing fields, None, tz-aware datetimes, strings, ints, floats, bools)
and random filters of the operators the repository uses; ids in order (sort, skip, limit) and
counts must be equal, and the compiled path must have answered (not handed the call back).

Where mongomock departs from MongoDB's documented behaviour the compiled path follows MongoDB,
and the generators leave that case out (each named where it is left out)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.mongo import client, matcher, ordering

KEYS = ["a", "b", "c", "p"]
PATHS = ["a", "b", "c", "a.b", "a.c", "p.c", "a.b.c"]
STRINGS = ["", "a", "ab", "CT", "Patient/1", "b"]
INSTANTS = [
    datetime(2020, 1, 1, tzinfo=UTC),
    datetime(2020, 1, 1, 1, 0, 0, 123456, tzinfo=UTC),
    datetime(2021, 6, 1, 2, tzinfo=timezone(timedelta(hours=2))),
    datetime(2024, 2, 29, tzinfo=UTC),
]
SCALARS = st.one_of(
    st.sampled_from([None, True, False]),
    # No 0 or 1 (see EQUALS) and no NaN (MongoDB orders NaN below every number; Python's
    # comparisons of it are all false).
    st.sampled_from([-2, 2, 3, 2.0, 1.5, -2.5, float("inf")]),
    st.sampled_from(STRINGS),
    st.sampled_from(INSTANTS),
)
# Values without nested arrays: mongomock traverses an array inside an array on a dotted path
# and tests elements of nested arrays, where MongoDB goes one array level per path step.
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
        st.lists(st.one_of(SCALARS, st.dictionaries(st.sampled_from(KEYS), inner, max_size=3))),
    ),
    max_leaves=8,
)
DOCS = st.lists(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4), max_size=10)

# Equality values: no None (null equality goes to mongomock: MongoDB's null matches missing
# fields and elements in ways the repository never asks for), and no 0 or 1: mongomock finds
# false for 0 and true for 1 (Python's equality), where MongoDB's BSON types differ.
EQUALS = st.one_of(
    st.booleans(),
    st.sampled_from([-2, 2, 3, 2.0, 1.5, -2.5]),
    st.sampled_from(STRINGS),
    st.sampled_from(INSTANTS),
)
BOUNDS = st.one_of(EQUALS, st.sampled_from([0, 1, 0.0, 1.0]))  # ranges: bracketed by both


def _field(path: str) -> st.SearchStrategy[dict[str, Any]]:
    ops = st.one_of(
        EQUALS,
        st.builds(lambda v: {"$eq": v}, EQUALS),
        st.builds(lambda v: {"$ne": v}, EQUALS),
        st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), BOUNDS),
        st.builds(
            lambda lo, hi: {"$gte": lo, "$lt": hi},
            st.sampled_from(INSTANTS),
            st.sampled_from(INSTANTS),
        ),
        st.builds(lambda vs: {"$in": vs}, st.lists(EQUALS, max_size=3)),
        st.builds(lambda vs: {"$nin": vs}, st.lists(EQUALS, max_size=3)),
        st.builds(lambda b: {"$exists": b}, st.booleans()),
        st.builds(lambda p: {"$regex": p}, st.sampled_from(["^a", "b$", "^Patient/", "T"])),
        st.builds(lambda p: {"$regex": p, "$options": "i"}, st.sampled_from(["^c", "A"])),
        st.builds(lambda q: {"$elemMatch": q}, _element_query()),
    )
    return st.builds(lambda condition: {path: condition}, ops)


def _element_query() -> st.SearchStrategy[dict[str, Any]]:
    simple = st.one_of(
        st.sampled_from(STRINGS),
        st.sampled_from([-2, 2, 3]),
        st.builds(lambda vs: {"$in": vs}, st.lists(st.sampled_from(STRINGS), max_size=2)),
        st.builds(lambda p: {"$regex": p}, st.sampled_from(["^a", "^Patient/"])),
    )
    return st.dictionaries(st.sampled_from(["a", "b", "c", "p"]), simple, min_size=1, max_size=2)


FILTERS = st.recursive(
    st.one_of(st.just({}), st.sampled_from(PATHS).flatmap(_field)),
    lambda inner: st.one_of(
        st.builds(
            lambda op, parts: {op: parts},
            st.sampled_from(["$and", "$or", "$nor"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=5,
)
# Sorts on top-level fields of scalars: mongomock sorts an array by its first element, where
# MongoDB takes the least (ascending) or greatest (descending); documents (compared field by
# field) are not sorted by the compiled path and go to mongomock whole.
SORT_FIELDS = ["a", "b"]
SORTS = st.one_of(
    st.none(),
    st.lists(
        st.tuples(st.sampled_from(SORT_FIELDS), st.sampled_from([1, -1])),
        max_size=2,
        unique_by=lambda t: t[0],
    ),
)


def _sortable(doc: dict[str, Any], sort: list[tuple[str, int]] | None) -> dict[str, Any]:
    """`doc` with each sort field a scalar (see SORTS)."""
    for field, _ in sort or ():
        if isinstance(doc.get(field), dict | list):
            doc = {**doc, field: len(doc[field]) + 2}
    return doc


class Calls:
    """Counts the calls handed to mongomock (client._run): the compiled path makes none."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        run = client._run

        def counted(*args: Any) -> None:
            self.count += 1
            run(*args)

        monkeypatch.setattr(client, "_run", counted)


async def _both(
    docs: list[dict[str, Any]],
    query: dict[str, Any],
    sort: list[tuple[str, int]] | None,
    skip: int,
    limit: int,
    calls: Calls,
) -> None:
    _, db = client.open_embedded("differential")
    ours, theirs = db["c"], client._driver(db)["c"]
    if docs:
        await ours.insert_many([{**doc, "_id": f"d{n}"} for n, doc in enumerate(docs)])

    def shaped(cursor: Any) -> Any:
        if sort:
            cursor = cursor.sort(sort)
        return cursor.skip(skip).limit(limit)

    expected = [d["_id"] for d in await shaped(theirs.find(query, {"_id": 1})).to_list(None)]
    count = await theirs.count_documents(query)
    before = calls.count
    found = await shaped(ours.find(query, {"_id": 1})).to_list(None)
    assert [d["_id"] for d in found] == expected, (docs, query, sort)
    assert await ours.count_documents(query) == count, (docs, query)
    assert calls.count == before, "the compiled path handed the call to mongomock"


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=DOCS,
    query=FILTERS,
    sort=SORTS,
    skip=st.integers(0, 3),
    limit=st.integers(0, 4),
)
def test_compiled_reads_agree_with_mongomock(
    docs: list[dict[str, Any]],
    query: dict[str, Any],
    sort: list[tuple[str, int]] | None,
    skip: int,
    limit: int,
) -> None:
    docs = [_sortable(doc, sort) for doc in docs]
    with pytest.MonkeyPatch.context() as monkeypatch:
        asyncio.run(_both(docs, query, sort, skip, limit, Calls(monkeypatch)))


@pytest.mark.parametrize(
    "query",
    [
        {"a": None},
        {"a": {"b": 1}},
        {"a": [1, 2]},
        {"a.0": 1},
        {"a": {"$size": 1}},
        {"a": {"$elemMatch": {"$gt": 1}}},
        {"a": re.compile("x")},
        {"$and": []},
        {"$where": "true"},
        {"a": {"$in": [None]}},
        {"a": {"$gt": None}},
    ],
)
def test_what_the_compiled_path_does_not_cover_is_refused(query: dict[str, Any]) -> None:
    with pytest.raises(matcher.Unsupported):
        matcher.predicate(query)


@pytest.mark.parametrize(
    ("doc", "query", "matches"),
    [
        # Type bracketing: a datetime never matches a string bound, a bool is not a number.
        ({"d": datetime(2020, 1, 1)}, {"d": {"$gte": "2019"}}, False),
        ({"n": True}, {"n": {"$gte": 0}}, False),
        ({"n": 1}, {"n": 1.0}, True),
        ({"n": True}, {"n": 1}, False),
        # $ne and $nin match a missing field, and look into arrays.
        ({}, {"a": {"$ne": 1}}, True),
        ({"a": [1, 2]}, {"a": {"$ne": 1}}, False),
        ({"a": [1, 2]}, {"a": {"$nin": [3]}}, True),
        # Arrays of documents are traversed by a dotted path, one level per step.
        ({"a": [{"b": 1}, {"b": 2}]}, {"a.b": 2}, True),
        ({"a": [[{"b": 2}]]}, {"a.b": 2}, False),
        ({"a": [[2]]}, {"a": 2}, False),
        ({"a": [{"b": [3]}]}, {"a.b": {"$gt": 2}}, True),
        # $exists through arrays; $elemMatch on arrays only, its query on documents only.
        ({"a": []}, {"a.b": {"$exists": False}}, True),
        ({"a": [1, {"b": None}]}, {"a.b": {"$exists": True}}, True),
        ({"a": {"p": "x"}}, {"a": {"$elemMatch": {"p": "x"}}}, False),
        (
            {"a": [{"p": ["x", "y"]}]},
            {"a": {"$elemMatch": {"p": "y", "c": {"$exists": False}}}},
            True,
        ),
    ],
)
def test_mongodb_semantics(doc: dict[str, Any], query: dict[str, Any], matches: bool) -> None:
    assert matcher.predicate(query)(doc) is matches


def test_sort_follows_bson_order_and_array_rules() -> None:
    docs: list[dict[str, Any]] = [
        {"_id": "date", "v": datetime(2020, 1, 1)},
        {"_id": "bool", "v": True},
        {"_id": "string", "v": "a"},
        {"_id": "number", "v": 2},
        {"_id": "null", "v": None},
        {"_id": "missing"},
        {"_id": "empty", "v": []},
        {"_id": "array", "v": [5, 0.5]},  # least 0.5 ascending, greatest 5 descending
    ]
    up = [d["_id"] for d in ordering.ordered(docs, [("v", 1)])]
    assert up == ["empty", "null", "missing", "array", "number", "string", "bool", "date"]
    down = [d["_id"] for d in ordering.ordered(docs, [("v", -1)])]
    assert down == ["date", "bool", "string", "array", "number", "null", "missing", "empty"]


def test_a_projection_copies_only_what_it_selects() -> None:
    stored = {"_id": "x", "meta": {"versionId": "2", "tag": [1]}, "s": [{"u": 1, "n": 2}, 3]}
    cut = ordering.projector({"_id": 0, "meta.versionId": 1, "s.u": 1})(stored)
    assert cut == {"meta": {"versionId": "2"}, "s": [{"u": 1}]}
    whole = ordering.projector(None)(stored)
    whole["meta"]["tag"].append(2)
    assert stored["meta"]["tag"] == [1]


# The search keys' shape, `_srv.k` elements with `p` and `c`, for the key index
# (store/mongo/keyindex.py): codes as strings, arrays of them, other types, or missing.
CODE = st.one_of(
    st.sampled_from(["x", "y", "z"]), st.lists(st.sampled_from(["x", "y", 2])), st.just(2)
)
ELEMENT = st.one_of(
    st.fixed_dictionaries({}, optional={"p": CODE, "c": CODE, "s": st.sampled_from(["", "u"])}),
    st.sampled_from(["x", 2]),
)
KEYED = st.lists(
    st.one_of(
        st.builds(lambda k: {"_srv": {"k": k}}, st.lists(ELEMENT, max_size=4)),
        st.builds(lambda k: {"_srv": [{"k": k}, {"k": "x"}]}, st.lists(ELEMENT, max_size=3)),
        st.just({}),
    ),
    max_size=8,
)
KEY_QUERIES = st.builds(
    lambda p, c, extra: {"$and": [{"_srv.k": {"$elemMatch": {"p": p, "c": c, **extra}}}]},
    st.sampled_from(["x", "y"]),
    st.one_of(
        st.sampled_from(["x", "y", "z"]),
        st.builds(lambda cs: {"$in": cs}, st.lists(st.sampled_from(["x", "y", "z"]), max_size=3)),
    ),
    st.sampled_from([{}, {"s": ""}]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=KEYED, query=KEY_QUERIES, skip=st.integers(0, 2))
def test_key_index_reads_agree_with_mongomock(
    docs: list[dict[str, Any]], query: dict[str, Any], skip: int
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        asyncio.run(_both(docs, query, None, skip, 0, Calls(monkeypatch)))
