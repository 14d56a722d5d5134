"""Sorting, paging and projecting documents the way MongoDB does, for the embedded store's
reads (store/mongo/client.py, after store/mongo/matcher.py picked the documents). Pure: no
driver import.

Sort order is BSON's (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/):
an empty array, then null and missing alike, numbers, strings, then booleans and dates; an
array sorts by its least element ascending and its greatest descending. Values of other types
(documents, binary, ObjectIds) raise `Unsupported` and mongomock does the whole call. Ties keep
the store's order (the sort is stable), as mongomock's does; the repository's sorts end with
`_id`, so they have none.

A projection copies only what it selects, and always copies: a caller may change what it
gets, and the stored documents must not change with it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from store.mongo.matcher import Doc, Unsupported, leaves

Sort = Sequence[tuple[str, int]]
_EMPTY = (0, 0)  # an empty array: before null
_NULL = (1, 0)
_RANK = {int: 2, float: 2, str: 3, bool: 8, datetime: 9}
_SHARED = (str, int, float, bool, type(None), datetime)  # immutable: copied by reference


def _key(value: Any) -> tuple[int, Any]:
    if value is None:
        return _NULL
    rank = _RANK.get(type(value))
    if rank is None:
        raise Unsupported(f"sorting a {type(value).__name__}")
    return rank, value


def sort_key(path: str, direction: int) -> Any:
    """The key function of one sort field."""
    parts = path.split(".")
    if any(not step or step.isdigit() for step in parts):
        raise Unsupported(f"sort path {path}")
    pick = min if direction > 0 else max

    def key(doc: Doc) -> tuple[int, Any]:
        found = leaves(doc, parts)
        if len(found) == 1 and type(found[0]) is not list:
            return _key(found[0])
        values: list[Any] = []
        for leaf in found:
            if type(leaf) is list:
                if any(type(item) is list for item in leaf):
                    raise Unsupported("sorting by nested arrays")
                values.extend(leaf)
            else:
                values.append(leaf)
        if not values:
            # Missing sorts as null; a path reaching only empty arrays sorts before null.
            return _EMPTY if found else _NULL
        return pick(_key(value) for value in values)

    return key


def ordered(docs: list[Doc], sort: Sort | None) -> list[Doc]:
    """`docs` in `sort` order (fields first to last, 1 ascending, -1 descending)."""
    if not sort:
        return docs
    for path, direction in reversed(list(sort)):
        if direction not in (1, -1):
            raise Unsupported(f"sort direction {direction!r}")
        docs = sorted(docs, key=sort_key(path, direction), reverse=direction < 0)
    return docs


def window(docs: list[Doc], skip: int, limit: int) -> list[Doc]:
    """skip, then at most `limit` (0: no limit), as a cursor's skip and limit."""
    if skip < 0 or limit < 0:
        raise Unsupported("negative skip or limit")
    end = skip + limit if limit else None
    return docs[skip:end]


def copied(value: Any) -> Any:
    """A deep copy of stored data: immutable values are shared, containers are new."""
    kind = type(value)
    if kind is dict:
        return {k: copied(v) for k, v in value.items()}
    if kind is list:
        return [copied(v) for v in value]
    if kind in _SHARED:
        return value
    return copy.deepcopy(value)


def projector(projection: Doc | None) -> Any:
    """The copy function of a find's projection: None copies whole; an inclusion of
    (possibly dotted) paths, with `_id` included unless `_id: 0`, copies only those (a path
    through an array keeps the array's documents, each cut to the rest of the path, and
    drops its other elements; a path stopping at a scalar before its end leaves it out)."""
    if projection is None:
        return copied
    fields = dict(projection)
    with_id = fields.pop("_id", 1)
    if with_id not in (0, 1) or not (fields or with_id):
        raise Unsupported("an exclusion of _id alone")
    if any(type(v) not in (int, bool) or v != 1 for v in fields.values()):
        raise Unsupported("a projection other than an inclusion")
    if with_id:
        fields["_id"] = 1
    tree: dict[str, Any] = {}
    for path in fields:
        parts = path.split(".")
        if any(not step or step.startswith("$") for step in parts):
            raise Unsupported(f"projection path {path}")
        node = tree
        for step in parts[:-1]:
            node = node.setdefault(step, {})
            if node is True:
                raise Unsupported("a projection path under another")
        if parts[-1] in node:
            raise Unsupported("a projection path under another")
        node[parts[-1]] = True

    def project(doc: Doc) -> Doc:
        return _cut(doc, tree)

    return project


def _cut(doc: Doc, tree: dict[str, Any]) -> Doc:
    out: Doc = {}
    for key, value in doc.items():
        below = tree.get(key)
        if below is None:
            continue
        if below is True:
            out[key] = copied(value)
        elif type(value) is dict:
            out[key] = _cut(value, below)
        elif type(value) is list:
            out[key] = _cut_array(value, below)
    return out


def _cut_array(items: list[Any], tree: dict[str, Any]) -> list[Any]:
    kept: list[Any] = []
    for item in items:
        if type(item) is dict:
            kept.append(_cut(item, tree))
        elif type(item) is list:
            kept.append(_cut_array(item, tree))
    return kept
