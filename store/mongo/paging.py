"""Sorting and keyset paging. A cursor is the sort key of a boundary row and the search it
continues, encrypted and authenticated (AES-GCM) so that a tampered cursor, or one from another
query, is refused rather than silently misread, and so that what it carries (the caller's own
search values, a boundary row's sort keys) is not readable where cursors end up: URLs, proxy
and browser logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from store.fhir.outcome import BAD_USER_INPUT, fail

Spec = list[tuple[str, int]]
# `_sort` keys -> the stored fields they order by; a missing `started` sorts last either way.
SORT_KEYS: dict[str, list[str]] = {
    "started": ["_srv.sort.nostart", "_srv.sort.started"],
    "_lastUpdated": ["_srv.lu.lo"],
    "_id": ["_id"],
    "status": ["status"],
}
DEFAULT_SORT = "-started"


def sort_spec(sort: str | None) -> Spec:
    """`-started,status` -> MongoDB sort fields, always ending with `_id` so order is total."""
    spec: Spec = []
    for raw in (sort or DEFAULT_SORT).split(","):
        name = raw.strip()
        direction = -1 if name.startswith("-") else 1
        fields = SORT_KEYS.get(name.lstrip("-"))
        if fields is None:
            raise fail(
                BAD_USER_INPUT,
                "_sort",
                f"cannot sort by '{name}'; use {', '.join(SORT_KEYS)} with an optional leading '-'",
            )
        for field in fields:
            if field not in (f for f, _ in spec):
                spec.append((field, 1 if field == "_srv.sort.nostart" else direction))
    if "_id" not in (f for f, _ in spec):
        spec.append(("_id", 1))
    return spec


def value_at(doc: dict[str, Any], path: str) -> Any:
    for step in path.split("."):
        doc = doc[step]
    return doc


def _utc(value: Any) -> Any:
    # MongoDB returns naive UTC datetimes unless the client is tz-aware.
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and not value.tzinfo else value


def boundary(doc: dict[str, Any], spec: Spec) -> list[Any]:
    return [_utc(value_at(doc, field)) for field, _ in spec]


def after(spec: Spec, values: list[Any], forward: bool = True) -> dict[str, Any]:
    """Rows strictly after (or, with forward=False, before) `values` in `spec` order."""
    ors = []
    for i, (field, direction) in enumerate(spec):
        ahead = (direction == 1) == forward
        clause = {f: v for (f, _), v in zip(spec[:i], values[:i], strict=True)}
        clause[field] = {"$gt" if ahead else "$lt": values[i]}
        ors.append(clause)
    return {"$or": ors}


def reverse(spec: Spec) -> Spec:
    return [(field, -direction) for field, direction in spec]


def _encode_value(value: Any) -> list[Any]:
    if isinstance(value, datetime):
        return ["d", _utc(value).isoformat()]
    return ["v", value]


def _decode_value(item: Any) -> Any:
    kind, value = item
    if kind == "d":
        return datetime.fromisoformat(value)
    if kind == "v" and isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise ValueError("bad cursor value")


_NONCE = 12
# What a cursor's body may inflate to: far more than any search a query can carry.
_MOST_BODY = 1024 * 1024


def _refused() -> Exception:
    return fail(
        BAD_USER_INPUT,
        "_cursor",
        "the cursor is not one this server made (it was changed or truncated)",
    )


class Cursors:
    """Makes and reads the opaque cursors of one query (its parameters and sort). A cursor may
    carry `carry`, JSON the caller's search arguments as sent, so that it continues that search
    alone; `opened` reads it back without knowing the query."""

    def __init__(self, secret: bytes, query: str, carry: Any = None) -> None:
        self._secret = secret
        self._query = hashlib.sha256(query.encode()).hexdigest()[:16]
        self._carry = carry

    @staticmethod
    def _keys(secret: bytes) -> tuple[AESGCM, bytes]:
        # Separate keys for encryption and for the nonce, both derived from the one secret.
        return (
            AESGCM(hmac.new(secret, b"cursor encryption", hashlib.sha256).digest()),
            hmac.new(secret, b"cursor nonce", hashlib.sha256).digest(),
        )

    def make(self, direction: str, keys: list[Any] | None = None, offset: int = 0) -> str:
        body = json.dumps(
            {
                "q": self._query,
                "d": direction,
                "o": offset,
                "k": [_encode_value(v) for v in keys or ()],
                "s": self._carry,
            },
            separators=(",", ":"),
        ).encode()
        cipher, nonce_key = self._keys(self._secret)
        # A synthetic nonce (a keyed digest of the body): the same page always gets the same
        # cursor (clients may cache by it), and two different bodies share a nonce only by a
        # 96-bit collision.
        nonce = hmac.new(nonce_key, body, hashlib.sha256).digest()[:_NONCE]
        sealed = cipher.encrypt(nonce, zlib.compress(body), None)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    @classmethod
    def opened(cls, secret: bytes, cursor: str) -> dict[str, Any]:
        """The body of a cursor this server made (whatever its query), else BAD_USER_INPUT."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            cipher, _ = cls._keys(secret)
            packed = cipher.decrypt(raw[:_NONCE], raw[_NONCE:], None)
            inflate = zlib.decompressobj()
            body = inflate.decompress(packed, _MOST_BODY)
            if inflate.unconsumed_tail:
                raise ValueError("too large")
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("shape")
        except (ValueError, InvalidTag, zlib.error, TypeError):
            raise _refused() from None
        return data

    def read(self, cursor: str) -> tuple[str, list[Any], int]:
        """(direction, boundary keys, offset) of a cursor made by `make` for this query."""
        data = self.opened(self._secret, cursor)
        try:
            direction, offset = data["d"], data["o"]
            keys = [_decode_value(v) for v in data["k"]]
            if direction not in ("first", "last", "after", "before") or type(offset) is not int:
                raise ValueError("shape")
        except (ValueError, KeyError, TypeError):
            raise _refused() from None
        if data.get("q") != self._query:
            raise fail(
                BAD_USER_INPUT,
                "_cursor",
                "the cursor belongs to another query (another "
                "search, _sort or caller): send it alone, or with the same search "
                "arguments and _sort as the page it came from",
            )
        return direction, keys, offset
