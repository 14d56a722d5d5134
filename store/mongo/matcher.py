"""MongoDB filters compiled to Python predicates, for the embedded store's reads
(store/mongo/client.py). mongomock interprets a filter anew for every document, walking its
operators and paths generically (a worklist search of 5,000 studies spent 70% of its 100 ms
there); a compiled filter is a tree of closures made once per filter shape.

Covered: what the repository emits (search.py, paging.py, reads.py, claims.py, rekey.py,
repository.py, history reads): `$and`, `$or`, `$nor`, equality to a string, number, boolean or
datetime, `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$in`, `$nin` (of such values),
`$exists`, `$regex` with `$options` of `imsx`, and `$elemMatch` with a query document. Anything
else (null equality, embedded-document or array equality, numeric path steps, other operators)
raises `Unsupported`, and the caller hands the call to mongomock unchanged.

Semantics are MongoDB's (https://www.mongodb.com/docs/manual/reference/operator/query/):
- a dotted path traverses arrays of documents implicitly, one array level per path step;
- a condition on a leaf array also tests each of its elements (one level, not nested arrays);
- comparisons bracket by type: a datetime never matches a string bound, a boolean is not a
  number, ints and floats compare numerically;
- `$ne` and `$nin` are the negations of `$eq` and `$in` (so they match a missing field);
- `$elemMatch` tests array leaves only, and its query only the elements that are documents.
Datetimes must be in the store's form (naive UTC, milliseconds), as client.py makes them.
Pure: no driver import (the import contract keeps the driver in client.py)."""

from __future__ import annotations

import operator
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

Doc = dict[str, Any]
Test = Callable[[Doc], bool]
Check = Callable[[Any], bool]  # on one value found at a path
_CACHED = 512  # compiled filters kept, most recently used
_compiled: OrderedDict[str, Test] = OrderedDict()
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_NUMBERS = (int, float)


class Unsupported(Exception):
    """The filter, projection or sort has something this module does not do: the caller uses
    mongomock for the whole call."""


def predicate(query: Doc) -> Test:
    """The compiled form of `query` (cached by its repr: equal reprs are equal filters for
    the value types compiled here, which include no type with a lossy repr)."""
    key = repr(query)
    test = _compiled.get(key)
    if test is None:
        test = _query(query)
        _compiled[key] = test
        if len(_compiled) > _CACHED:
            _compiled.popitem(last=False)
    else:
        _compiled.move_to_end(key)
    return test


def leaves(doc: Doc, parts: list[str]) -> list[Any]:
    """The values at a dotted path, arrays of documents traversed on the way (one level per
    step); missing branches give nothing."""
    value: Any = doc
    for i, step in enumerate(parts):  # documents in documents, the common case, without lists
        if type(value) is dict:
            if step not in value:
                return []
            value = value[step]
        else:
            found: list[Any] = []
            _walk(value, parts, i, found)
            return found
    return [value]


def _walk(value: Any, parts: list[str], i: int, found: list[Any]) -> None:
    if i == len(parts):
        found.append(value)
    elif type(value) is dict:
        if parts[i] in value:
            _walk(value[parts[i]], parts, i + 1, found)
    elif type(value) is list:
        for item in value:
            if type(item) is dict and parts[i] in item:
                _walk(item[parts[i]], parts, i + 1, found)


def _query(query: Any) -> Test:
    if not isinstance(query, dict):
        raise Unsupported("a query is a document")
    return _all([_clause(key, condition) for key, condition in query.items()])


def _all(tests: list[Test]) -> Test:
    """The conjunction of `tests` (unrolled for the short ones: a generator per document
    costs more than the tests)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda doc: first(doc) and second(doc)
    if len(tests) == 3:
        first, second, third = tests
        return lambda doc: first(doc) and second(doc) and third(doc)
    return lambda doc: all(test(doc) for test in tests)


def _clause(key: str, condition: Any) -> Test:
    if key in ("$and", "$or", "$nor"):
        if not isinstance(condition, list | tuple) or not condition:
            raise Unsupported(f"{key} takes a non-empty list")
        parts = [_query(part) for part in condition]
        if key == "$and":
            return _all(parts)
        if key == "$or":
            return lambda doc: any(part(doc) for part in parts)
        return lambda doc: not any(part(doc) for part in parts)
    if key.startswith("$"):
        raise Unsupported(key)
    path = key.split(".")
    if any(not step or step.isdigit() or step.startswith("$") for step in path):
        raise Unsupported(f"path {key}")
    if isinstance(condition, dict):
        if not condition or not all(op.startswith("$") for op in condition):
            raise Unsupported("equality to a document")
        made = [_operator(path, op, value, condition) for op, value in condition.items()]
        return _all([t for t in made if t is not None])
    return _equal_at(path, condition)


def _operator(path: list[str], op: str, value: Any, condition: Doc) -> Test | None:
    if op == "$eq":
        return _equal_at(path, value)
    if op == "$ne":
        equal = _equal_at(path, value)
        return lambda doc: not equal(doc)
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple):
            raise Unsupported(f"{op} takes a list")
        checks = [_equal(v) for v in value]
        within = _any_leaf(path, lambda v: any(check(v) for check in checks))
        return within if op == "$in" else lambda doc: not within(doc)
    if op in _ORDER:
        return _any_leaf(path, _compare(_ORDER[op], value))
    if op == "$exists":
        if type(value) is not bool:
            raise Unsupported("$exists takes a boolean")
        return lambda doc: bool(leaves(doc, path)) is value
    if op == "$regex":
        return _any_leaf(path, _regex(value, condition.get("$options", "")))
    if op == "$options":
        if "$regex" not in condition:
            raise Unsupported("$options without $regex")
        return None  # read with $regex
    if op == "$elemMatch":
        if not isinstance(value, dict) or not value or any(k.startswith("$") for k in value):
            raise Unsupported("$elemMatch of operators")
        if all(type(v) is str and k and "." not in k and not k.isdigit() for k, v in value.items()):
            return _elem_match_strings(path, tuple(value.items()))
        inner = _query(value)

        def elem_match(doc: Doc) -> bool:
            for leaf in leaves(doc, path):
                if type(leaf) is list:
                    for element in leaf:
                        if type(element) is dict and inner(element):
                            return True
            return False

        return elem_match
    raise Unsupported(op)


def _elem_match_strings(path: list[str], pairs: tuple[tuple[str, str], ...]) -> Test:
    """`$elemMatch` of string equalities on plain keys (the search keys' `{p, c, s}`), the
    most frequent filter of all, in one function."""
    missing = object()

    def elem_match(doc: Doc) -> bool:
        for leaf in leaves(doc, path):
            if type(leaf) is list:
                for element in leaf:
                    if type(element) is dict:
                        for key, value in pairs:
                            found = element.get(key, missing)
                            if found != value and not (type(found) is list and value in found):
                                break
                        else:
                            return True
        return False

    return elem_match


def _any_leaf(path: list[str], check: Check, string: str | None = None) -> Test:
    """A test that some value at `path`, or some element of an array there, passes `check`
    (which, for equality to a `string`, is `==` and `in` a list: only a string equals one)."""

    def any_of(value: Any) -> bool:
        if check(value):
            return True
        if type(value) is list:
            for item in value:
                if check(item):
                    return True
        return False

    def string_in(value: Any) -> bool:
        return value == string or (type(value) is list and string in value)

    one = any_of if string is None else string_in
    if len(path) == 1:  # the common case, without the walk
        name = path[0]
        return lambda doc: name in doc and one(doc[name])

    def any_leaf(doc: Doc) -> bool:
        value: Any = doc
        for step in path:  # documents in documents: one value
            if type(value) is not dict:
                break
            if step not in value:
                return False
            value = value[step]
        else:
            return one(value)
        for leaf in leaves(doc, path):  # arrays on the way
            if one(leaf):
                return True
        return False

    return any_leaf


def _equal_at(path: list[str], value: Any) -> Test:
    return _any_leaf(path, _equal(value), value if type(value) is str else None)


def _equal(value: Any) -> Check:
    kind = type(value)
    if kind is str:
        return lambda v: v == value  # only a string equals a string
    if kind is bool:
        return lambda v: v is value
    if kind in _NUMBERS:
        if value != value:  # NaN: MongoDB's equality differs from Python's
            raise Unsupported("NaN")
        return lambda v: type(v) in _NUMBERS and v == value
    if kind is datetime:
        return lambda v: type(v) is datetime and v == value
    raise Unsupported(f"equality to a {kind.__name__}")


_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _compare(order: Callable[[Any, Any], Any], bound: Any) -> Check:
    """A range test within the bound's type bracket (MongoDB's "type bracketing")."""
    kind = type(bound)
    if kind in _NUMBERS:
        if bound != bound:
            raise Unsupported("NaN")
        return lambda v: type(v) in _NUMBERS and v == v and order(v, bound)
    if kind in (str, bool):
        return lambda v: type(v) is kind and order(v, bound)
    if kind is datetime:
        if bound.tzinfo is not None:
            raise Unsupported("a tz-aware bound (the store's datetimes are naive UTC)")
        # A stored datetime is naive UTC (client.py); one that is not would raise here.
        return lambda v: type(v) is datetime and order(v, bound)
    raise Unsupported(f"a range bound of type {kind.__name__}")


def _regex(pattern: Any, options: Any) -> Check:
    if type(pattern) is not str or type(options) is not str or set(options) - set(_FLAGS):
        raise Unsupported("$regex other than a pattern string with imsx options")
    flags = 0
    for option in options:
        flags |= _FLAGS[option]
    search = re.compile(pattern, flags).search
    return lambda v: type(v) is str and search(v) is not None
