"""Apollo's automatic persisted queries: a client sends the SHA-256 of its query instead of the
query (in `extensions.persistedQuery`, by GET so HTTP caches can keep the answer); an unknown
hash is answered PERSISTED_QUERY_NOT_FOUND, and the client sends the request again with its query,
which registers it. A registered query is no privilege: every request runs it through the same
parsing, limits, access gate and audit as any other. With authentication on, only a caller with
a valid token registers, and each caller (token subject) has its own registrations: no one can
push out another's, nor learn by its hash whether another sent some text."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any

from api.http.answers import Refusal
from store.fhir.outcome import PERSISTED_QUERY_NOT_FOUND, PERSISTED_QUERY_NOT_SUPPORTED

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Apollo Server answers these with 200 and this Cache-Control: its link retries on the code
# (or the exact message), and Apollo Client 3 would turn persisted queries off on a 400.
_NOT_CACHED = {"cache-control": "private, no-cache, must-revalidate"}
_ENTRY_BYTES = 200  # what an entry costs besides its text (key, dict slot, string headers)


class PersistedQueries:
    """Query texts by SHA-256 (lower-case hex), least recently used evicted first, holding at
    most `max_bytes` of query text (UTF-8) in all; 0 turns persisted queries off. Per worker
    process: another worker answers PERSISTED_QUERY_NOT_FOUND once, and the client registers
    the query there too."""

    def __init__(self, max_bytes: int, shares: int = 8) -> None:
        self.max_bytes = max_bytes
        # One caller may hold at most this much: filling the store with its own texts, it
        # pushes out its own, not everyone else's.
        self.per_caller = max_bytes // shares
        self._queries: OrderedDict[str, str] = OrderedDict()
        self._size = 0
        self._held: dict[str, int] = {}  # bytes per caller

    def __len__(self) -> int:
        return len(self._queries)

    def get(self, key: str) -> str | None:
        query = self._queries.get(key)
        if query is not None:
            self._queries.move_to_end(key)
        return query

    def put(self, key: str, query: str) -> None:
        """Keeps `query` (whose hash was checked) unless it alone is over a caller's share;
        the caller's own least recently used go first when its share is full, then anyone's
        when the whole store is."""
        size = self._cost(key, query)
        caller = _caller_of(key)
        if key in self._queries or size > self.per_caller:
            return
        if self._held.get(caller, 0) + size > self.per_caller:
            own = [k for k in self._queries if _caller_of(k) == caller]
            for old in own:
                self._evict(old)
                if self._held.get(caller, 0) + size <= self.per_caller:
                    break
        self._queries[key] = query
        self._size += size
        self._held[caller] = self._held.get(caller, 0) + size
        while self._size > self.max_bytes:
            self._evict(next(iter(self._queries)))

    def _evict(self, key: str) -> None:
        query = self._queries.pop(key)
        size = self._cost(key, query)
        self._size -= size
        caller = _caller_of(key)
        self._held[caller] -= size
        if not self._held[caller]:
            del self._held[caller]

    @staticmethod
    def _cost(key: str, query: str) -> int:
        return len(query.encode()) + len(key) + _ENTRY_BYTES

    def resolve(
        self, extensions: dict[str, Any] | None, query: str | None, caller: str | None = ""
    ) -> tuple[str | None, str | None]:
        """(the query to run, the key to register it under once it ran) for a request of
        `caller` (whose registrations it sees; None: a caller who may not register, a bad
        token) with these `extensions` and `query`; Refusal when its persistedQuery cannot be
        honoured."""
        if not extensions or "persistedQuery" not in extensions:
            return query, None
        sha256 = _hash_of(extensions["persistedQuery"])
        key = f"{caller or ''}\0{sha256}"
        if self.max_bytes == 0:
            raise Refusal(
                200,
                "PersistedQueryNotSupported",
                PERSISTED_QUERY_NOT_SUPPORTED,
                "not-supported",
                headers=_NOT_CACHED,
                diagnostics=(
                    "persisted queries are off on this server "
                    "(IMAGING_PERSISTED_QUERY_BYTES=0): send the query itself"
                ),
            )
        if query is None:
            known = self.get(key) if caller is not None else None
            if known is None:
                raise Refusal(
                    200,
                    "PersistedQueryNotFound",
                    PERSISTED_QUERY_NOT_FOUND,
                    "not-found",
                    headers=_NOT_CACHED,
                    diagnostics=(
                        "no query is registered under extensions.persistedQuery."
                        "sha256Hash: send the request again with its query"
                    ),
                )
            return known, None
        if hashlib.sha256(query.encode()).hexdigest() != sha256:
            raise Refusal(
                400,
                "extensions.persistedQuery.sha256Hash: provided sha does not "
                "match query (it must be the SHA-256 of the query text, as hex)",
            )
        return query, (key if caller is not None else None)


def _caller_of(key: str) -> str:
    return key.rpartition("\0")[0]


def _hash_of(persisted: Any) -> str:
    """The sha256Hash of a version 1 persistedQuery object, lower-cased."""
    if not isinstance(persisted, dict):
        raise Refusal(
            400, "extensions.persistedQuery must be an object with version and sha256Hash"
        )
    if persisted.get("version") != 1:
        raise Refusal(
            400,
            "extensions.persistedQuery.version: only version 1 is served "
            f"(got {str(persisted.get('version'))[:20]!r})",
        )
    sha256 = persisted.get("sha256Hash")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise Refusal(
            400,
            "extensions.persistedQuery.sha256Hash must be a SHA-256 in hex "
            "(64 characters 0-9, a-f)",
        )
    return sha256.lower()
