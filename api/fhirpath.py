"""The `fhirpath` argument of ImagingStudyList and ImagingStudyConnection (HL7 graphql.html): a
FHIRPath expression, evaluated by fhirpathpy (a maintained engine, with the R5 model) on each
study the search found. A study is kept when the result is `true` or, when it is not a single
boolean, not empty. The work is bounded: the candidates are one page of the search (at most
the list cap), read whole and charged to the operation's budget as fhirJson is, the expression
at most one search value long, and the evaluation of one field at most `MAX_SECONDS` before
the query is rejected."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from api.budget import Shape
from api.limits import rejected
from store.fhir.outcome import BAD_USER_INPUT, fail

ARGUMENT = "fhirpath"
MAX_SECONDS = 2.0  # of evaluation per field; a study's size is capped, an expression is not
DESCRIPTION = ("A FHIRPath expression evaluated on each study the search finds; a study is "
               "kept when it gives true (or, not a boolean, anything at all). Applied after the "
               "store's page is read, so a page may hold fewer than _count studies; counts are "
               "of the search before it.")
Study = dict[str, Any]


def _errors(result: list[Any]) -> list[str]:
    # fhirpathpy reports some failures (single() on many) as items, not exceptions.
    return [str(item.get("$error")) for item in result
            if isinstance(item, dict) and item.get("$status") == "error"]


class FhirPath:
    """One compiled expression, checked before the search runs."""

    def __init__(self, expression: str, max_length: int) -> None:
        if not expression.strip():
            raise fail(BAD_USER_INPUT, ARGUMENT, "the expression must not be empty")
        if len(expression) > max_length:
            raise fail(BAD_USER_INPUT, ARGUMENT, f"the expression may be at most {max_length} "
                       f"characters; it has {len(expression)}")
        try:
            self._run: Callable[..., list[Any]] = fhirpathpy.compile(expression, models["r5"])
            # fhirpathpy finds syntax and arity errors when it evaluates: on an empty study,
            # whose error can only be about the expression.
            found = _errors(self._run({"resourceType": "ImagingStudy"}, {}))
        except Exception as error:  # the engine raises plain Exceptions
            raise fail(BAD_USER_INPUT, ARGUMENT, f"not a FHIRPath expression this server can "
                       f"evaluate: {error}") from None
        if found:
            raise fail(BAD_USER_INPUT, ARGUMENT, f"the expression fails: {found[0]}")

    @classmethod
    def given(cls, expression: str | None, max_length: int) -> FhirPath | None:
        """The compiled expression, or None when the argument was not given."""
        return None if expression is None else cls(expression, max_length)

    def keeps(self, study: Study) -> bool:
        """Whether the expression holds on `study`. An error names no value of the study:
        the message of the engine may quote one."""
        try:
            result = self._run(study, {})
        except Exception:
            result = [{"$status": "error"}]
        if _errors(result):
            raise fail(BAD_USER_INPUT, ARGUMENT, "the expression fails on a study the search "
                       "found (a function or operator given a value of the wrong type or too "
                       "many values); guard it, e.g. with exists() or first()")
        return result != [False] and bool(result)

    @staticmethod
    def priced(shape: Shape, keep: FhirPath | None) -> Shape:
        """`shape`, priced as whole studies when an expression reads them: the operation's
        budget of returned values then bounds the evaluation work as it bounds fhirJson."""
        shape.json = shape.json or keep is not None
        return shape

    def filter(self, studies: list[Study]) -> list[Study]:
        """The studies the expression keeps, in order."""
        started = time.monotonic()
        kept = []
        for study in studies:
            if (spent := time.monotonic() - started) > MAX_SECONDS:
                raise rejected("seconds of fhirpath evaluation", int(MAX_SECONDS),
                               f"{spent:.1f}", "narrow the search or simplify the expression")
            if self.keeps(study):
                kept.append(study)
        return kept
