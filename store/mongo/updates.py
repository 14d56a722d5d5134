"""MongoDB update documents applied in Python by copy-on-write: the embedded store's own
`find_one_and_update` for the updates the repository makes (store/mongo/client.py hands them
here; mongomock's deep-copies the whole document three times per update).

Supported: `$set`, and `$push` / `$addToSet` with `$each`, on dotted paths whose numbers index
arrays, under conditions of equality and `$nin` of strings. Anything else raises Unsupported
and mongomock does it. The new document is the old one with only the containers on the updated
paths copied; it shares the rest, which is never changed in place afterwards.

A `$nin` condition (no new instance UID already in the study) would read every value on its
path at every append, which grows with the study; an Updater remembers those values per
document and, when an update only pushes to that path, adds what was pushed, so an append
costs what it appends. A memory is tied to the very document object it was read from, and
store/mongo/client.py makes the updater forget everything before any call with which mongomock
changes documents in place, so a document changed any other way is read afresh."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

_INDEX = re.compile(r"\.\d+(?=\.|$)")


class Unsupported(Exception):
    """An update or a condition this module does not do: mongomock does it."""


class Updater:
    """Applies updates to stored documents, remembering the values of `$nin` paths."""

    def __init__(self, size: int = 64) -> None:
        self._seen: OrderedDict[tuple[Any, str], tuple[dict[str, Any], set[str]]] = OrderedDict()
        self._size = size

    def forget(self) -> None:
        """Forgets every document: one may be changed in place other than by `apply`."""
        self._seen.clear()

    def apply(
        self,
        key: Any,
        old: dict[str, Any],
        query: dict[str, Any],
        update: dict[str, Any],
        stored_form: Callable[[Any], Any],
    ) -> dict[str, Any] | None:
        """The new document, or None when `old` does not meet `query`."""
        absent: list[tuple[str, set[str]]] = []
        for path, test in query.items():
            if isinstance(test, dict):
                if set(test) != {"$nin"} or not all(isinstance(v, str) for v in test["$nin"]):
                    raise Unsupported
                present = self._present(key, old, path)
                if not present.isdisjoint(test["$nin"]):
                    return None
                absent.append((path, present))
            elif not any(
                v == test or (isinstance(v, list) and test in v) for v in values(old, path)
            ):
                return None
        new = _copied(old, update, stored_form)
        for path, present in absent:
            self._follow(key, path, present, new, update)
        return new

    def _present(self, key: Any, doc: dict[str, Any], path: str) -> set[str]:
        seen = self._seen.get((key, path))
        if seen is not None and seen[0] is doc:
            return seen[1]
        found: set[str] = set()
        for value in values(doc, path):
            for v in value if isinstance(value, list) else (value,):
                if isinstance(v, str):
                    found.add(v)
        return found

    def _follow(
        self, key: Any, path: str, present: set[str], new: dict[str, Any], update: dict[str, Any]
    ) -> None:
        """Remembers the values of `path` in `new` when the update only pushed to it."""
        self._seen.pop((key, path), None)
        general = path
        for operator, fields in update.items():
            for field, spec in fields.items():
                field = _INDEX.sub("", field)
                if operator == "$push" and general.startswith(field + "."):
                    rest = general[len(field) + 1 :]
                    for item in spec["$each"]:
                        for value in values(item, rest):
                            for v in value if isinstance(value, list) else (value,):
                                if isinstance(v, str):
                                    present.add(v)
                elif (
                    field == general
                    or general.startswith(field + ".")
                    or field.startswith(general + ".")
                ):
                    return  # changed otherwise: read afresh next time
        self._seen[(key, path)] = (new, present)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


def values(node: Any, path: str) -> list[Any]:
    """The values a dotted path reaches, as MongoDB reads it: a number indexes an array, a
    name goes through every element of one."""
    return _values(node, path.split("."))


def _values(node: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return [node]
    head = parts[0]
    if isinstance(node, dict):
        return _values(node[head], parts[1:]) if head in node else []
    if isinstance(node, list):
        if head.isdigit():
            index = int(head)
            return _values(node[index], parts[1:]) if index < len(node) else []
        return [value for item in node for value in _values(item, parts)]
    return []


def _copied(
    old: dict[str, Any], update: dict[str, Any], stored_form: Callable[[Any], Any]
) -> dict[str, Any]:
    new = dict(old)
    made = {id(new)}

    def parent(path: str) -> tuple[Any, Any]:
        node: Any = new
        *above, last = path.split(".")
        for part in above:
            key = _key(node, part)
            child = node.get(key) if isinstance(node, dict) else node[key]
            if child is None and isinstance(node, dict):
                child = {}
            elif id(child) not in made:
                if not isinstance(child, dict | list):
                    raise Unsupported
                child = type(child)(child)
            node[key] = child
            made.add(id(child))
            node = child
        return node, _key(node, last)

    for path, value in update.get("$set", {}).items():
        node, key = parent(path)
        node[key] = stored_form(value)
    for operator in ("$push", "$addToSet"):
        for path, spec in update.get(operator, {}).items():
            if not isinstance(spec, dict) or set(spec) != {"$each"}:
                raise Unsupported
            node, key = parent(path)
            items = node.get(key, []) if isinstance(node, dict) else node[key]
            if not isinstance(items, list):
                raise Unsupported
            items = list(items)
            for value in stored_form(spec["$each"]):
                if operator == "$push" or value not in items:
                    items.append(value)
            node[key] = items
    return new


def _key(node: Any, part: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise Unsupported
        return int(part)
    if not isinstance(node, dict):
        raise Unsupported
    return part
