"""FHIR search parameters -> a MongoDB filter. Pure: no I/O.

The 17 R5 ImagingStudy parameters plus `_id` and `_lastUpdated`. Parameters are (name, value)
pairs: repeated names are AND, a comma inside one value is OR. User text only ever lands in
value positions of equality matches, never in an operator or field name, so a value such as
`{"$ne": 1}` is matched literally."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from store.fhir.dates import DateError, date_range, shift
from store.fhir.outcome import BAD_USER_INPUT, fail
from store.fhir.primitives import CHECKS
from store.fhir.references import reference_type

STATUS_SYSTEM = "http://hl7.org/fhir/imagingstudy-status"
LIVE: dict[str, Any] = {"_srv.deleted": False}
NOTHING: dict[str, Any] = {"_id": {"$in": []}}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIX = re.compile(r"([a-z]{2})(?=\d)")

Params = list[tuple[str, str]]
Build = Callable[[str, str], dict[str, Any]]


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


def escape(value: str) -> str:
    """A literal value made safe for a search string (FHIR escapes \\, `,`, `|` and `$`)."""
    for char in "\\,|$":
        value = value.replace(char, "\\" + char)
    return value


def parse_token(value: str) -> tuple[str | None, str | None]:
    """`system|code` -> (system, code); `code` -> (None, code); `|code` -> ("", code);
    `system|` -> (system, None)."""
    parts = split_unescaped(value, "|")
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) > 2:
        raise ValueError("a token is code, system|code, |code or system|")
    system, code = parts
    if not system and not code:
        raise ValueError("a token needs a code or a system")
    return system, code or None


def _token(key: str) -> Build:
    def build(_: str, value: str) -> dict[str, Any]:
        system, code = parse_token(value)
        match: dict[str, Any] = {"p": key}
        if code is not None:
            match["c"] = code
        if system is not None:
            match["s"] = system
        return {"_srv.k": {"$elemMatch": match}}
    return build


def _plain_code(path: str, system_of_element: str | None = None) -> Build:
    """Token search on an element of type code/id: a system, if given, must be the element's."""
    def build(_: str, value: str) -> dict[str, Any]:
        system, code = parse_token(value)
        if code is None or system not in (None, "", system_of_element):
            return NOTHING
        return {path: code}
    return build


def _reference(key: str, targets: tuple[str, ...]) -> Build:
    def build(name: str, value: str) -> dict[str, Any]:
        value = value.split("/_history/")[0]
        if "/" not in value:
            if CHECKS["id"](value):
                raise ValueError(f"'{value}' is neither Type/id, an absolute URL nor an id")
            return {"_srv.k": {"$elemMatch": {"p": key, "c": {
                "$in": [f"{t}/{value}" for t in targets]}}}}
        named = reference_type(value)
        if named is None:
            raise ValueError(f"'{value}' is neither Type/id, an absolute URL nor an id")
        if named not in targets:
            raise ValueError(f"searches {' | '.join(targets)} references, not {named}")
        return {"_srv.k": {"$elemMatch": {"p": key, "c": value}}}
    return build


def _reason(name: str, value: str) -> dict[str, Any]:
    # R5 gives `reason` no expression: a value that looks like a reference searches
    # reason.reference, anything else is a token on reason.concept.
    if "/" in value and "|" not in value:
        return _reference("reason", REASON_TARGETS)(name, value)
    return _token("reason")(name, value)


# What people type for a comparison, and the FHIR prefix that says it.
_COMPARATORS = {">=": "ge", "<=": "le", "!=": "ne", "<>": "ne", "=>": "ge", "=<": "le",
                ">": "gt", "<": "lt", "==": "eq", "=": "eq"}


def _comparator_hint(value: str) -> str | None:
    """`>=2020` -> the advice to write `ge2020`; None when `value` does not start with a
    comparison sign."""
    stripped = value.lstrip()
    for sign, prefix in _COMPARATORS.items():
        if stripped.startswith(sign):
            rest = stripped[len(sign):].strip()
            example = f"{prefix}{rest}" if rest else f"{prefix}2020"
            return f"'{value}' is not a FHIR date search; use a prefix: {example}"
    return None


def _date(field: str) -> Build:
    def build(_: str, value: str) -> dict[str, Any]:
        if (hint := _comparator_hint(value)) is not None:
            raise ValueError(hint)
        prefix = "eq"
        if (match := _PREFIX.match(value)) is not None:
            prefix = match[1]
            if prefix not in PREFIXES:
                raise ValueError(f"unknown prefix '{prefix}'; use one of {', '.join(PREFIXES)}")
            value = value[2:]
        try:
            low, high = date_range(value)
        except DateError as error:
            raise ValueError(str(error)) from None
        return date_filter(f"_srv.{field}", prefix, low, high)
    return build


def date_filter(field: str, prefix: str, low: datetime, high: datetime) -> dict[str, Any]:
    """FHIR's prefix rules between the search range [low, high) and each stored range."""
    lo, hi = f"{field}.lo", f"{field}.hi"
    eq = {lo: {"$gte": low}, hi: {"$lte": high}}
    rules: dict[str, dict[str, Any]] = {
        "eq": eq,
        "ne": {"$or": [{lo: {"$lt": low}}, {hi: {"$gt": high}}]},
        "gt": {hi: {"$gt": high}},
        "lt": {lo: {"$lt": low}},
        "ge": {"$or": [{hi: {"$gt": high}}, eq]},
        "le": {"$or": [{lo: {"$lt": low}}, eq]},
        "sa": {lo: {"$gte": high}},
        "eb": {hi: {"$lte": low}},
    }
    if prefix == "ap":
        # Approximately: overlaps the value widened by 10% of its distance from now.
        gap = abs(datetime.now(UTC) - low) / 10
        return {lo: {"$lt": shift(high, gap)}, hi: {"$gt": shift(low, -gap)}}
    return rules[prefix]


REASON_TARGETS = ("Condition", "Observation", "DiagnosticReport", "DocumentReference")
PERFORMER_TARGETS = ("Practitioner", "PractitionerRole", "Organization", "CareTeam", "Patient",
                     "Device", "RelatedPerson", "HealthcareService")
PARAMETERS: dict[str, Build] = {
    "_id": _plain_code("_id"),
    "_lastUpdated": _date("lu"),
    "based-on": _reference("based-on", ("CarePlan", "ServiceRequest", "Appointment",
                                        "AppointmentResponse", "Task")),
    "body-site": _token("body-site"),
    "body-structure": _reference("body-structure", ("BodyStructure",)),
    "dicom-class": _token("dicom-class"),
    "encounter": _reference("encounter", ("Encounter",)),
    "endpoint": _reference("endpoint", ("Endpoint",)),
    "identifier": _token("identifier"),
    "instance": _plain_code("series.instance.uid"),
    "modality": _token("modality"),
    "patient": _reference("subject", ("Patient",)),
    "performer": _reference("performer", PERFORMER_TARGETS),
    "reason": _reason,
    "referrer": _reference("referrer", ("Practitioner", "PractitionerRole")),
    "series": _plain_code("series.uid"),
    "started": _date("started"),
    "status": _plain_code("status", STATUS_SYSTEM),
    "subject": _reference("subject", ("Patient", "Device", "Group")),
}


def _clause(name: str, raw: str, argument: str) -> dict[str, Any]:
    build = PARAMETERS.get(name)
    if build is None:
        raise fail(BAD_USER_INPUT, argument, f"unknown search parameter '{name}'; supported: "
                   f"{', '.join(PARAMETERS)}")
    # The error's expression is `argument`, which the message leads with: the parameter is
    # named again only when the argument is another one (ifNoneExist's search string).
    named = "" if argument == graphql_name(name) else f"{name}: "
    if raw.startswith(":"):
        raise fail(BAD_USER_INPUT, argument, f"{named}search modifiers are not supported")
    values = split_unescaped(raw, ",")
    if not all(values):
        raise fail(BAD_USER_INPUT, argument, f"{named}a search value must not be empty")
    try:
        ors = [build(argument, value) for value in values]
    except ValueError as error:
        raise fail(BAD_USER_INPUT, argument, f"{named}{error}") from None
    return ors[0] if len(ors) == 1 else {"$or": ors}


@dataclass(frozen=True)
class ValueCaps:
    """How many search values a request may give, per argument and in total (comma-separated
    values and list items alike), and how long each may be. 200,000 values in one 2 MB
    request held the server for a minute."""

    per_argument: int = 100
    total: int = 300
    length: int = 1_024


def check_values(arguments: Iterable[tuple[str, list[str]]], caps: ValueCaps) -> None:
    """Refuses, naming the argument, search values over `caps`; `arguments` are (argument,
    raw values) pairs. Cheap: a raw value too long to hold few short values is refused
    unsplit."""
    total = 0
    for argument, raws in arguments:
        count = 0
        for raw in raws:
            if len(raw) > caps.per_argument * (caps.length + 1):
                count = caps.per_argument + 1  # too many or too long values, whichever
                break
            values = split_unescaped(raw, ",")
            longest = max(len(value) for value in values)
            if longest > caps.length:
                raise fail(BAD_USER_INPUT, argument, f"a search value may be at most "
                           f"{caps.length} characters; one has {longest}")
            count += len(values)
        if count > caps.per_argument:
            raise fail(BAD_USER_INPUT, argument, f"at most {caps.per_argument} search values "
                       "are allowed (comma-separated values and list items together); there "
                       "are more: split the search into several requests")
        total += count
        if total > caps.total:
            raise fail(BAD_USER_INPUT, argument, f"a search may have at most {caps.total} "
                       f"values over all its arguments; this argument takes it to {total}")


def to_filter(params: Params, argument: str | None = None) -> dict[str, Any]:
    """AND over the parameters, OR over the comma-separated values of each. Errors name
    `argument` when given (e.g. ifNoneExist), else the GraphQL argument of the parameter."""
    clauses = [LIVE]
    for name, raw in params:
        if ":" in name:
            raise fail(BAD_USER_INPUT, argument or name, f"search modifiers such as '{name}' "
                       "are not supported")
        clauses.append(_clause(name, raw, argument or graphql_name(name)))
    return {"$and": clauses}


def graphql_name(name: str) -> str:
    """The GraphQL argument of a FHIR search parameter: `-` is written `_`."""
    return name.replace("-", "_")


def parse_query(query: str, argument: str, caps: ValueCaps = ValueCaps()) -> Params:
    """A FHIR search string `a=x&b=y` (as in If-None-Exist) -> parameter pairs, its values
    within `caps` (all of them counted as of one argument)."""
    if len(query) > caps.per_argument * (caps.length + 1):
        raise fail(BAD_USER_INPUT, argument, f"may have at most {caps.per_argument} search "
                   f"values of at most {caps.length} characters each; it is longer")
    try:
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise fail(BAD_USER_INPUT, argument, "must be a FHIR search string such as "
                   "identifier=urn:dicom:uid|urn:oid:1.2.3") from None
    if not pairs:
        raise fail(BAD_USER_INPUT, argument, "must name at least one search parameter")
    check_values([(argument, [value for _, value in pairs])], caps)
    return pairs


def params_key(params: Params) -> str:
    """A stable key for a set of search parameters, whatever their order."""
    return hashlib.sha256(repr(sorted(params)).encode()).hexdigest()
