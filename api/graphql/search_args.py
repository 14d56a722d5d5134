"""The FHIR search arguments shared by ImagingStudyList and ImagingStudyConnection, added to a
resolver's signature by `searchable` so the two fields cannot drift apart."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import strawberry

from api.graphql.context import Info
from store.fhir.definitions import search_parameters
from store.mongo.search import (
    CODES,
    FILTER,
    IDENTIFIER_SEARCHES,
    ValueCaps,
    check_values,
    graphql_name,
    or_value,
)

T = TypeVar("T")

_SYNTAX = {
    "token": "A token: code, system|code, |code (no system) or system|.",
    "reference": "A reference: Type/id, a bare id, or an absolute URL (matched as written).",
    "date": "A date with an optional prefix eq ne gt lt ge le sa eb ap, e.g. ge2024-01-01; "
    "partial dates are ranges (2024 is the whole year).",
    "identifier": "An identifier: system|value, |value (no system), value (any system) or "
    "system| (any value).",
}
_EXTRA = {
    "_id": ("token", "The logical id of the study."),
    "_lastUpdated": ("date", "When the study last changed (meta.lastUpdated)."),
    "reason": (
        "token",
        "The reason for the study. R5 gives no expression: a value that looks "
        "like a reference (Condition/1) searches reason.reference, anything else is a "
        "token on reason.concept.",
    ),
    # FHIR's `:identifier` modifier: what each one searches (the reference is never resolved).
    "based-on:identifier": (
        "identifier",
        "The identifier of a basedOn reference, such as the accession number of the "
        "ServiceRequest (basedOn.identifier, the REST based-on:identifier).",
    ),
    "patient:identifier": (
        "identifier",
        "The identifier of the subject when the subject is a Patient by its type or its "
        "literal reference, such as the MRN (subject.identifier, the REST "
        "patient:identifier).",
    ),
    "performer:identifier": (
        "identifier",
        "The identifier of a series performer's actor (series.performer.actor.identifier, "
        "the REST performer:identifier).",
    ),
    "referrer:identifier": (
        "identifier",
        "The identifier of the referrer (referrer.identifier, the REST referrer:identifier).",
    ),
    "subject:identifier": (
        "identifier",
        "The identifier of the subject, whatever its type (subject.identifier, the REST "
        "subject:identifier).",
    ),
}


def _description(code: str) -> str:
    if code in _EXTRA:
        kind, text = _EXTRA[code]
        return f"{text} {_SYNTAX[kind]}"
    kind, expression, text = search_parameters()[code]
    return f"{text} ({expression}). {_SYNTAX[kind]}"


_REPEAT = (
    " A list of values means any of them (OR); a comma is part of the value. For AND, "
    "modifiers and more, use _filter."
)
# _filter's grammar has no modifiers (R5 search_filter.html), so it cannot say :identifier.
_REPEAT_IDENTIFIER = (
    " A list of values means any of them (OR); a comma is part of the value. Not in _filter."
)
_PARAMETERS = [
    inspect.Parameter(
        graphql_name(code),
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            list[str] | None,
            strawberry.argument(
                description=_description(code)
                + (_REPEAT_IDENTIFIER if code in IDENTIFIER_SEARCHES else _REPEAT)
            ),
        ],
    )
    for code in CODES
]
_FILTER = inspect.Parameter(
    FILTER,
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        str | None,
        strawberry.argument(
            description=(
                "FHIR's _filter language (R5 search_filter.html) over these "
                "parameters (names as in FHIR: body-site, _lastUpdated): "
                "comparisons such as `started ge 2024-01-01` or `modality ne "
                "CT`, joined by and/or (left to right, no precedence), not "
                "(...), parentheses and quoted values. AND with the other "
                "arguments."
            )
        ),
    ],
)
_BY_ARGUMENT = {graphql_name(code): code for code in CODES}


def _caps(info: Info) -> ValueCaps:
    settings = info.context.settings
    return ValueCaps(
        settings.search_max_values,
        settings.search_max_total_values,
        settings.search_max_value_length,
    )


def searchable(resolver: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Gives `resolver` every search argument and `_filter`; they reach it as `params`, a
    list of (FHIR parameter, value) pairs in FHIR's REST AND-of-ORs form."""
    signature = inspect.signature(resolver)
    own = [p for p in signature.parameters.values() if p.name != "params"]

    @functools.wraps(resolver)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        # The items of a list are ORed, each one whole value: one REST value (escaped commas)
        # per argument, so the store ANDs the arguments and ORs within each.
        given = [(name, values) for name in _BY_ARGUMENT if (values := kwargs.pop(name, None))]
        if (expression := kwargs.pop(FILTER, None)) is not None:
            given.append((FILTER, [expression]))
        check_values(given, _caps(kwargs["info"]), split=False)
        params = [
            (_BY_ARGUMENT[name], or_value(values)) if name in _BY_ARGUMENT else (name, values[0])
            for name, values in given
        ]
        return await resolver(*args, params=params, **kwargs)

    # inspect.signature honours __signature__ (PEP 362), which typeshed does not declare on
    # functions.
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            *own[:2],
            *_PARAMETERS,
            _FILTER,
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[2:]),
        ]
    )
    return wrapper
