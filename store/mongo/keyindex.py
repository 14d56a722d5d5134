"""An in-memory index of the embedded store's search keys, so a search reads only the studies
that have its key instead of every study (store/mongo/client.py).

Every search parameter is an `$elemMatch` on `_srv.k` with string `p` and `c` (keys.py); the
index maps each (p, c) that a document's `_srv.k` elements carry to the documents, in store
order. It only ever narrows: every candidate still passes the whole compiled filter, so a
document listed under a key it no longer has costs a test, not a wrong answer. What it must
never do is miss a document, so it is rebuilt from the stored documents whenever any write has
run since it was built (client.py counts writes in the embedded thread, where they run):
searches between writes, the worklist's load, share one build. Pure: no driver import."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from store.mongo.matcher import Doc, leaves

PATH = ["_srv", "k"]
Key = tuple[str, str]


class KeyIndex:
    """(p, c) -> ids, of the documents at one moment (`built`, the write count then)."""

    def __init__(self, docs: Iterable[tuple[Any, Doc]], built: int) -> None:
        self.built = built
        self.position: dict[Any, int] = {}
        self.postings: dict[Key, list[Any]] = {}
        postings = self.postings
        for n, (key, doc) in enumerate(docs):
            self.position[key] = n
            for pair in _pairs(doc):
                ids = postings.get(pair)
                if ids is None:
                    postings[pair] = [key]
                elif ids[-1] != key:
                    ids.append(key)

    def candidates(self, keys: list[Key]) -> list[Any]:
        """The ids under any of `keys`, in store order."""
        if len(keys) == 1:
            return self.postings.get(keys[0], [])
        found = {i for key in keys for i in self.postings.get(key, ())}
        return sorted(found, key=self.position.__getitem__)


def _strings(value: Any) -> list[str]:
    # As the filter matches: the value, or the elements of an array there.
    if type(value) is str:
        return [value]
    if type(value) is list:
        return [v for v in value if type(v) is str]
    return []


def _pairs(doc: Doc) -> set[Key] | list[Key]:
    srv = doc.get("_srv")
    keys = srv.get("k") if type(srv) is dict else None
    if type(keys) is list:  # the stored form: string p and c in each (duplicates are harmless)
        plain = [
            (e.get("p"), e.get("c")) for e in keys if type(e) is dict and e.get("c") is not None
        ]
        if all(type(p) is str and type(c) is str for p, c in plain):
            return plain  # type: ignore[return-value]
    pairs: set[Key] = set()
    for leaf in leaves(doc, PATH):
        if type(leaf) is list:
            for element in leaf:
                if type(element) is dict:
                    for p in _strings(element.get("p")):
                        for c in _strings(element.get("c")):
                            pairs.add((p, c))
    return pairs


def keys_of(query: Any) -> list[Key] | None:
    """The (p, c) keys one of which every match of `query` must carry: from an `$elemMatch`
    on `_srv.k` with a string `p` and a string (or `$in` of strings) `c`, at the top level
    of the query or of a top-level `$and`; None when there is none."""
    if not isinstance(query, dict):
        return None
    for field, condition in query.items():
        if field == "$and" and isinstance(condition, list):
            for part in condition:
                if (found := keys_of(part)) is not None:
                    return found
        elif field == "_srv.k" and isinstance(condition, dict) and len(condition) == 1:
            match = condition.get("$elemMatch")
            if not isinstance(match, dict) or type(match.get("p")) is not str:
                continue
            code = match.get("c")
            if type(code) is str:
                return [(match["p"], code)]
            if isinstance(code, dict) and set(code) == {"$in"} and isinstance(code["$in"], list):
                if all(type(c) is str for c in code["$in"]):
                    return [(match["p"], c) for c in code["$in"]]
    return None
