"""The version-checked study cache: decoded studies kept per process, keyed by what they hold.

A stored version never changes (a write makes a new `meta.versionId`, and versions only grow),
so a study read once at version v can answer every later read that finds the study still at v.
`Reads.get` first asks the store for the current version alone (a covered read of one field,
under the same live and subject conditions as the read itself) and serves the kept document
when one of that version is here; otherwise it reads as before and keeps what it read. No
invalidation is needed and concurrent writers cannot make it stale: the version decides.

An entry is keyed by `(id, versionId, projection)`: a read that projected holds only part of
the study, so it answers only the same projection again, never a wider one. A whole study
(projection None) answers every projection, cut to the asked top-level elements in Python,
which is a superset of the asked paths, as the embedded store returns anyway
(`client._top_level_projection`).

Kept documents are shared by every reader: the read path hands out a new top-level dict, and
no code may change a study it read in place (`StudyCache(audit=True)`, used by the tests,
checks that on every hit). The bound counts the encoded size the store reported for each
document (BSON on MongoDB, JSON on the embedded store), not its Python objects, which take a
few times more."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import orjson

from store.fhir import Study

Key = tuple[str, str, frozenset[str] | None]


def shape(projection: dict[str, int] | None) -> frozenset[str] | None:
    """The part of a cache key that says what a read holds: its projected paths, or None."""
    return None if projection is None else frozenset(projection)


class StudyCache:
    """A least-recently-used map of `(id, versionId, projection)` to a decoded study, bounded
    by the stored bytes of what it holds. Not thread-safe: used from the event loop only."""

    def __init__(self, max_bytes: int, *, audit: bool = False) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, tuple[Study, int]] = OrderedDict()
        self._by_id: dict[str, set[Key]] = {}
        self._audit: dict[Key, bytes] | None = {} if audit else None

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, study_id: str, version: str, projection: dict[str, int] | None) -> Study | None:
        """The study at `version` holding at least `projection`, as a new top-level dict
        sharing the kept values; None when none is kept. Drops versions other than `version`
        (the store has moved on: they will not be asked for again)."""
        kept = self._by_id.get(study_id)
        if not kept:
            self.misses += 1
            return None
        for key in [k for k in kept if k[1] != version]:
            self._drop(key)
        for key in ((study_id, version, shape(projection)), (study_id, version, None)):
            entry = self._entries.get(key)
            if entry is None:
                continue
            self._entries.move_to_end(key)
            self.hits += 1
            doc = entry[0]
            self._check(key, doc)
            if key[2] is None and projection is not None:
                return _cut(doc, projection)
            return dict(doc)
        self.misses += 1
        return None

    def keep(self, doc: Study, projection: dict[str, int] | None, size: int) -> None:
        """Keeps a study as read with `projection`, `size` its stored bytes. A study larger
        than the whole bound is not kept (it would only push everything else out)."""
        version = (doc.get("meta") or {}).get("versionId")
        study_id = doc.get("id")
        if not isinstance(version, str) or not isinstance(study_id, str) or size > self.max_bytes:
            return
        key: Key = (study_id, version, shape(projection))
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (doc, size)
        self._by_id.setdefault(study_id, set()).add(key)
        self.bytes += size
        if self._audit is not None:
            self._audit[key] = _digest(doc)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def forget(self, study_id: str) -> None:
        """Drops every kept version of a study (it is gone, or the caller cannot say which
        version is current)."""
        for key in list(self._by_id.get(study_id, ())):
            self._drop(key)

    def _drop(self, key: Key) -> None:
        _, size = self._entries.pop(key)
        self.bytes -= size
        ids = self._by_id[key[0]]
        ids.discard(key)
        if not ids:
            del self._by_id[key[0]]
        if self._audit is not None:
            self._audit.pop(key, None)

    def _check(self, key: Key, doc: Study) -> None:
        if self._audit is not None and self._audit.get(key) != _digest(doc):
            raise AssertionError(f"a kept study was changed in place by a reader: {key[:2]}")

    def changed(self) -> list[tuple[str, str]]:
        """The kept studies changed in place since they were kept (audit mode; for tests)."""
        if self._audit is None:
            return []
        return [k[:2] for k, (doc, _) in self._entries.items() if self._audit[k] != _digest(doc)]


def _cut(doc: Study, projection: Iterable[str]) -> Study:
    """The top-level elements of `doc` that the projected paths start with."""
    top = {path.split(".", 1)[0] for path in projection}
    return {k: v for k, v in doc.items() if k in top}


def _digest(doc: Study) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
