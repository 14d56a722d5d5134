"""FHIR search parameters -> a MongoDB filter. Pure: no I/O.

The 17 R5 ImagingStudy parameters plus `_id` and `_lastUpdated`, the `:identifier` modifier on
five reference parameters (`patient:identifier`, ...), and `_filter` (an expression over the
unmodified ones, store/fhir/filter.py). Parameters are (name, value) pairs in FHIR's REST form:
repeated names are AND, a comma inside one value is OR (GraphQL lists arrive here as one value,
their items joined by `or_value`, so a comma inside an item stays literal). User text only ever
lands in value positions of equality matches, never in an operator or field name, so a value
such as `{"$ne": 1}` is matched literally."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from store.fhir import filter as fhir_filter
from store.fhir.dates import DateError, date_range, shift
from store.fhir.definitions import search_parameters
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


def or_value(values: Iterable[str]) -> str:
    """Items that are each one value (a GraphQL list, where a comma is part of the value) ->
    one REST value that means any of them. Only `\\` and `,` are escaped: a token's `|` (and
    its `\\|`) keep their meaning."""
    return ",".join(value.replace("\\", "\\\\").replace(",", "\\,") for value in values)


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


def _key_match(key: str, system: str | None, code: str | None) -> dict[str, Any]:
    """The filter of one token key of `_srv.k` (store/mongo/keys.py)."""
    match: dict[str, Any] = {"p": key}
    if code is not None:
        match["c"] = code
    if system is not None:
        match["s"] = system
    return {"_srv.k": {"$elemMatch": match}}


def _token(key: str) -> Build:
    def build(_: str, value: str) -> dict[str, Any]:
        return _key_match(key, *parse_token(value))

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
            return {
                "_srv.k": {
                    "$elemMatch": {"p": key, "c": {"$in": [f"{t}/{value}" for t in targets]}}
                }
            }
        named = reference_type(value)
        if named is None:
            raise ValueError(f"'{value}' is neither Type/id, an absolute URL nor an id")
        if named not in targets:
            raise ValueError(f"searches {' | '.join(targets)} references, not {named}")
        return {"_srv.k": {"$elemMatch": {"p": key, "c": value}}}

    return build


def _identifier(key: str) -> Build:
    """The `:identifier` modifier: the Reference's own `identifier` (never resolved), given as
    `system|value`, `|value` (no system), `value` (any system) or `system|` (any value)."""

    def build(_: str, value: str) -> dict[str, Any]:
        try:
            system, code = parse_token(value)
        except ValueError:
            raise ValueError("an identifier is value, system|value, |value or system|") from None
        return _key_match(key, system, code)

    return build


def _reason(name: str, value: str) -> dict[str, Any]:
    # R5 gives `reason` no expression: a value that looks like a reference searches
    # reason.reference, anything else is a token on reason.concept.
    if "/" in value and "|" not in value:
        return _reference("reason", REASON_TARGETS)(name, value)
    return _token("reason")(name, value)


# What people type for a comparison, and the FHIR prefix that says it.
_COMPARATORS = {
    ">=": "ge",
    "<=": "le",
    "!=": "ne",
    "<>": "ne",
    "=>": "ge",
    "=<": "le",
    ">": "gt",
    "<": "lt",
    "==": "eq",
    "=": "eq",
}


def _comparator_hint(value: str) -> str | None:
    """`>=2020` -> the advice to write `ge2020`; None when `value` does not start with a
    comparison sign."""
    stripped = value.lstrip()
    for sign, prefix in _COMPARATORS.items():
        if stripped.startswith(sign):
            rest = stripped[len(sign) :].strip()
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
        # Only in _filter: the stored range contains the value's (co) or overlaps it (po).
        "co": {lo: {"$lte": low}, hi: {"$gte": high}},
        "po": {lo: {"$lt": high}, hi: {"$gt": low}},
    }
    if prefix == "ap":
        # Approximately: overlaps the value widened by 10% of its distance from now.
        gap = abs(datetime.now(UTC) - low) / 10
        return {lo: {"$lt": shift(high, gap)}, hi: {"$gt": shift(low, -gap)}}
    return rules[prefix]


FILTER = "_filter"
REASON_TARGETS = ("Condition", "Observation", "DiagnosticReport", "DocumentReference")
PERFORMER_TARGETS = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CareTeam",
    "Patient",
    "Device",
    "RelatedPerson",
    "HealthcareService",
)
PARAMETERS: dict[str, Build] = {
    "_id": _plain_code("_id"),
    "_lastUpdated": _date("lu"),
    "based-on": _reference(
        "based-on", ("CarePlan", "ServiceRequest", "Appointment", "AppointmentResponse", "Task")
    ),
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
# The reference parameters that take FHIR's `:identifier` modifier (R5 search.html, "identifier"
# modifier): each searches the `identifier` of the References its parameter searches, under a
# private key of the same name (store/mongo/keys.py). `patient:identifier` keeps `patient`'s
# target: a subject whose type (or literal reference) says Patient.
IDENTIFIER_SEARCHES = [
    f"{code}:identifier" for code in ("based-on", "patient", "performer", "referrer", "subject")
]
PARAMETERS.update({name: _identifier(name) for name in IDENTIFIER_SEARCHES})
# Every code a search takes, in the order the GraphQL arguments and the CLI's options list them.
CODES = [*search_parameters(), "_id", "_lastUpdated", *IDENTIFIER_SEARCHES]


# The type of each parameter, which decides the `_filter` operators it takes. `reason` is a
# token or a reference by the look of the value, as in the plain argument.
KINDS: dict[str, str] = {
    "_id": "token",
    "_lastUpdated": "date",
    "based-on": "reference",
    "body-site": "token",
    "body-structure": "reference",
    "dicom-class": "token",
    "encounter": "reference",
    "endpoint": "reference",
    "identifier": "token",
    "instance": "token",
    "modality": "token",
    "patient": "reference",
    "performer": "reference",
    "reason": "token or reference",
    "referrer": "reference",
    "series": "token",
    "started": "date",
    "status": "token",
    "subject": "reference",
}
FILTER_OPERATORS: dict[str, tuple[str, ...]] = {
    "token": ("eq", "ne", "pr"),
    "reference": ("eq", "re", "ne", "pr"),
    "token or reference": ("eq", "re", "ne", "pr"),
    "date": ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "co", "po", "pr"),
}
# What the grammar has that no parameter here can honestly answer, and why.
_REFUSED = {
    "ss": "needs a terminology server (subsumption), which this server does not have",
    "sb": "needs a terminology server (subsumption), which this server does not have",
    "in": "needs a terminology server (value set expansion), which this server does not have",
    "ni": "needs a terminology server (value set expansion), which this server does not have",
    "co": "applies to string, number and date parameters",
    "sw": "applies to string parameters; ImagingStudy has none",
    "ew": "applies to string parameters; ImagingStudy has none",
}


def _has_key(key: str, code: dict[str, Any] | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"p": key}
    if code is not None:
        match["c"] = code
    return {"_srv.k": {"$elemMatch": match}}


# `name pr true`: the study has a value for the parameter.
PRESENT: dict[str, dict[str, Any]] = {
    "_id": {"_id": {"$exists": True}},
    "_lastUpdated": {"_srv.lu": {"$exists": True}},
    "instance": {"series.instance.uid": {"$exists": True}},
    "patient": _has_key("subject", {"$regex": "^Patient/"}),
    "series": {"series.uid": {"$exists": True}},
    "started": {"_srv.started": {"$exists": True}},
    "status": {"status": {"$exists": True}},
    **{
        name: _has_key(name)
        for name, kind in KINDS.items()
        if ("reference" in kind and name != "patient")
        or name in ("body-site", "dicom-class", "identifier", "modality")
    },
}
DATE_FIELDS = {"started": "_srv.started", "_lastUpdated": "_srv.lu"}


def _filter_test(test: fhir_filter.Comparison) -> dict[str, Any]:
    """One `_filter` comparison -> the store filter the plain argument makes for it."""

    def refuse(rule: str) -> ValueError:
        return fhir_filter.FilterError(test.at + 1, f"'{test.name} {test.op}': {rule}")

    kind = KINDS.get(test.name)
    if kind is None:
        raise refuse(f"unknown search parameter '{test.name}'; supported: {', '.join(KINDS)}")
    allowed = FILTER_OPERATORS[kind]
    if test.op not in allowed:
        why = _REFUSED.get(test.op, f"'{test.op}' does not apply to {kind} parameters")
        raise refuse(f"{why}; a {kind} parameter takes {' '.join(allowed)}")
    if test.op == "pr":
        if test.value not in ("true", "false"):
            raise refuse("the value of 'pr' is true or false")
        present = PRESENT[test.name]
        return present if test.value == "true" else {"$nor": [present]}
    try:
        if kind == "date":
            if test.op in ("co", "po"):
                try:
                    low, high = date_range(test.value)
                except DateError as error:
                    raise ValueError(str(error)) from None
                return date_filter(DATE_FIELDS[test.name], test.op, low, high)
            if _PREFIX.match(test.value) or _comparator_hint(test.value):
                raise ValueError("the operator is the prefix: write the date alone")
            return PARAMETERS[test.name](FILTER, f"{test.op}{test.value}")
        if not test.value:
            raise ValueError("a search value must not be empty")
        equal = PARAMETERS[test.name](FILTER, test.value)
        return {"$nor": [equal]} if test.op == "ne" else equal
    except ValueError as error:
        raise refuse(str(error)) from None


def _compile(node: fhir_filter.Node) -> dict[str, Any]:
    if isinstance(node, fhir_filter.Not):
        return {"$nor": [_compile(node.part)]}
    if isinstance(node, fhir_filter.Logic):
        return {f"${node.op}": [_compile(part) for part in node.parts]}
    return _filter_test(node)


def parse_filter(text: str, caps: ValueCaps | None = None) -> fhir_filter.Node:
    """A `_filter` expression's tree, within `caps` (its comparisons count as search values);
    BAD_USER_INPUT naming `_filter`, the position and the rule otherwise."""
    try:
        if caps is None:
            return fhir_filter.parse(text)
        if len(text) > caps.per_argument * (caps.length + 1):
            raise fhir_filter.FilterError(
                1,
                f"the expression may be at most {caps.per_argument * (caps.length + 1)} characters",
            )
        return fhir_filter.parse(text, caps.per_argument, caps.length)
    except fhir_filter.FilterError as error:
        raise fail(BAD_USER_INPUT, FILTER, str(error)) from None


def filter_comparison(name: str, value: str) -> str:
    """One REST search value as a `_filter` comparison (a date's prefix is its operator)."""
    op = "eq"
    if name in DATE_FIELDS and (match := _PREFIX.match(value)) and match[1] in PREFIXES:
        op, value = match[1], value[2:]
    return f"{name} {op} {json.dumps(value)}"


def filter_clause(text: str, argument: str = FILTER) -> dict[str, Any]:
    """A `_filter` expression -> a store filter built from the plain arguments' filters.
    Errors name `argument` (ifNoneExist's search string may hold a _filter too)."""
    named = "" if argument == FILTER else f"{FILTER}: "
    try:
        return _compile(fhir_filter.parse(text))
    except fhir_filter.FilterError as error:
        raise fail(BAD_USER_INPUT, argument, f"{named}{error}") from None


def _clause(name: str, raw: str, argument: str) -> dict[str, Any]:
    if name == FILTER:
        return filter_clause(raw, argument)
    build = PARAMETERS.get(name)
    if build is None:
        raise fail(
            BAD_USER_INPUT,
            argument,
            f"unknown search parameter '{name}'; supported: {', '.join([*PARAMETERS, FILTER])}",
        )
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


def check_values(
    arguments: Iterable[tuple[str, list[str]]], caps: ValueCaps, split: bool = True
) -> None:
    """Refuses, naming the argument, search values over `caps`; `arguments` are (argument,
    raw values) pairs. Cheap: a raw value too long to hold few short values is refused
    unsplit."""
    total = 0
    for argument, raws in arguments:
        count = 0
        if argument == FILTER:  # each comparison is a value
            raws, count = [], sum(len(fhir_filter.tests(parse_filter(raw, caps))) for raw in raws)
        elif not split:  # GraphQL list items: each one value, commas and all
            if (longest := max(map(len, raws), default=0)) > caps.length:
                raise fail(
                    BAD_USER_INPUT,
                    argument,
                    f"a search value may be at most {caps.length} characters; one has {longest}",
                )
            raws, count = [], len(raws)
        for raw in raws:
            if len(raw) > caps.per_argument * (caps.length + 1):
                count = caps.per_argument + 1  # too many or too long values, whichever
                break
            values = split_unescaped(raw, ",")
            longest = max(len(value) for value in values)
            if longest > caps.length:
                raise fail(
                    BAD_USER_INPUT,
                    argument,
                    f"a search value may be at most {caps.length} characters; one has {longest}",
                )
            count += len(values)
        if count > caps.per_argument:
            raise fail(
                BAD_USER_INPUT,
                argument,
                f"at most {caps.per_argument} search values "
                "are allowed (list items, _filter comparisons or comma-separated values "
                "of a search string); there "
                "are more: split the search into several requests",
            )
        total += count
        if total > caps.total:
            raise fail(
                BAD_USER_INPUT,
                argument,
                f"a search may have at most {caps.total} "
                f"values over all its arguments; this argument takes it to {total}",
            )


def to_filter(params: Params, argument: str | None = None) -> dict[str, Any]:
    """AND over the parameters, OR over the comma-separated values of each. Errors name
    `argument` when given (e.g. ifNoneExist), else the GraphQL argument of the parameter."""
    clauses = [LIVE]
    for name, raw in params:
        if ":" in name and name not in PARAMETERS:
            raise fail(
                BAD_USER_INPUT,
                argument or name,
                f"search modifiers such as '{name}' are not supported; the one supported is "
                f":identifier, on {', '.join(n.split(':')[0] for n in IDENTIFIER_SEARCHES)}",
            )
        clauses.append(_clause(name, raw, argument or graphql_name(name)))
    return {"$and": clauses}


def graphql_name(name: str) -> str:
    """The GraphQL argument of a FHIR search parameter: `-` and a modifier's `:` are written `_`
    (`based-on:identifier` is `based_on_identifier`)."""
    return name.replace("-", "_").replace(":", "_")


def parse_query(query: str, argument: str, caps: ValueCaps = ValueCaps()) -> Params:
    """A FHIR search string `a=x&b=y` (as in If-None-Exist) -> parameter pairs, its values
    within `caps` (all of them counted as of one argument)."""
    if len(query) > caps.per_argument * (caps.length + 1):
        raise fail(
            BAD_USER_INPUT,
            argument,
            f"may have at most {caps.per_argument} search "
            f"values of at most {caps.length} characters each; it is longer",
        )
    try:
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise fail(
            BAD_USER_INPUT,
            argument,
            "must be a FHIR search string such as identifier=urn:dicom:uid|urn:oid:1.2.3",
        ) from None
    if not pairs:
        raise fail(BAD_USER_INPUT, argument, "must name at least one search parameter")
    check_values([(argument, [value for _, value in pairs])], caps)
    return pairs


def params_key(params: Params) -> str:
    """A stable key for a set of search parameters, whatever their order."""
    return hashlib.sha256(repr(sorted(params)).encode()).hexdigest()
