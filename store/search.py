"""FHIR search parameters -> a MongoDB filter and sort. Pure: no I/O.

User text only ever lands in value positions of equality matches, never in an operator or field
name position, so a value such as `{"$ne": 1}` is matched literally."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl

from store.fhir.outcome import BAD_USER_INPUT, fail

STATUS_SYSTEM = "http://hl7.org/fhir/imagingstudy-status"
SUBJECT_TYPES = ("Patient", "Device", "Group")
LIVE: dict[str, Any] = {"_srv.deleted": False}
DEFAULT_SORT: list[tuple[str, int]] = [("started", -1), ("_id", 1)]

Params = list[tuple[str, str]]


def split_unescaped(value: str, separator: str) -> list[str]:
    """Splits on `separator` except where FHIR escapes it with a backslash; unescapes."""
    parts, current, chars = [], [], iter(value)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _token(value: str) -> tuple[str | None, str | None]:
    """`system|code` -> (system, code); `code` -> (None, code); `|code` -> ("", code)."""
    if "|" not in value.replace("\\|", ""):
        return None, split_unescaped(value, "|")[0]
    system, code = split_unescaped(value, "|")[:2]
    return system, code or None


def _identifier(value: str) -> dict[str, Any]:
    system, code = _token(value)
    if system is None:
        return {"identifier.value": code}
    if system == "":
        return {"identifier": {"$elemMatch": {"system": {"$exists": False}, "value": code}}}
    if code is None:
        return {"identifier.system": system}
    return {"identifier": {"$elemMatch": {"system": system, "value": code}}}


def _status(value: str) -> dict[str, Any]:
    system, code = _token(value)
    if system not in (None, STATUS_SYSTEM) or code is None:
        return {"_id": {"$in": []}}  # a foreign system matches nothing
    return {"status": code}


def _reference(value: str, types: tuple[str, ...]) -> dict[str, Any]:
    if "/" in value:
        return {"subject.reference": value}
    return {"subject.reference": {"$in": [f"{t}/{value}" for t in types]}}


_PARAMS = {
    "_id": lambda v: {"_id": v},
    "identifier": _identifier,
    "status": _status,
    "patient": lambda v: _reference(v, ("Patient",)),
    "subject": lambda v: _reference(v, SUBJECT_TYPES),
}
SUPPORTED = tuple(_PARAMS)


def to_filter(params: Params, argument: str = "search") -> dict[str, Any]:
    """AND over the parameters, OR over the comma-separated values of each."""
    clauses: list[dict[str, Any]] = [LIVE]
    for name, raw in params:
        if ":" in name:
            raise fail(BAD_USER_INPUT, argument, f"search modifiers such as '{name}' are not "
                       "supported")
        build = _PARAMS.get(name)
        if build is None:
            raise fail(BAD_USER_INPUT, argument, f"unknown search parameter '{name}'; supported:"
                       f" {', '.join(SUPPORTED)}")
        values = [v for v in split_unescaped(raw, ",") if v]
        if not values:
            raise fail(BAD_USER_INPUT, name, f"the {name} search value must not be empty")
        ors = [build(v) for v in values]
        clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
    return {"$and": clauses}


def parse_query(query: str, argument: str) -> Params:
    """A FHIR search string `a=x&b=y` (as in If-None-Exist) -> parameter pairs."""
    try:
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise fail(BAD_USER_INPUT, argument, "must be a FHIR search string such as "
                   "identifier=urn:dicom:uid|urn:oid:1.2.3") from None
    if not pairs:
        raise fail(BAD_USER_INPUT, argument, "must name at least one search parameter")
    return pairs


def params_key(params: Params) -> str:
    """A stable key for a set of search parameters, whatever their order."""
    return hashlib.sha256(repr(sorted(params)).encode()).hexdigest()
