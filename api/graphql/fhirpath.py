"""FHIRPath for the server, in one place: fhirpathpy (a maintained engine, with the R5 model)
compiles an expression once per text (a bounded cache), evaluates it on FHIR JSON, and every
failure becomes BAD_USER_INPUT naming the argument. Three arguments use it: `fhirpath` on
ImagingStudyList and ImagingStudyConnection (`FhirPath`, on each study the search found), the
`fhirpath` of every repeating element (`evaluate` on each item, api/graphql/types/repeating.py) and
`@slice(path:)` (api/graphql/directives.py).

fhirpathpy reads a primitive's `_name` sibling (R5 JSON's id and extensions of a primitive) as
a second item next to the value rather than as part of it, so on a study with `_status`,
`status` is two items and `status = 'available'` is false. The expression is therefore
evaluated on a view without the `_name` siblings unless it may read them (it names `extension`
or `id`, or walks the whole tree): primitives then compare as FHIRPath says they do.

The work of the search-level argument is bounded: the candidates are one page of the search (at
most the list cap), read whole and charged to the operation's budget as fhirJson is, the
expression at most one search value long, and the evaluation of one field at most
`fhirpath_time.MAX_SECONDS` before the query is rejected."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from api.graphql import fhirpath_time as timing
from api.graphql.fhirpath_rules import (
    POOL,
    Compiled,
    FhirPathError,
    compiled,
)
from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, fail

if TYPE_CHECKING:  # api.graphql.budget reads the projection, which reads names_read here
    from api.graphql.budget import Shape

ARGUMENT = "fhirpath"
# Characters of an expression on a repeating element or in @slice (the search's own is
# IMAGING_SEARCH_MAX_VALUE_LENGTH): parsing costs with the text, off the loop (precompile).
MAX_LENGTH = 4_096


DESCRIPTION = (
    "A FHIRPath expression evaluated on each study the search finds; a study is "
    "kept when it gives true (or, not a boolean, anything at all). Applied after the "
    "store's page is read, so a page may hold fewer than _count studies; counts are "
    "of the search before it."
)
# A study with a failure only an expression can cause: what the search-level probe runs on.
_EMPTY_STUDY = {"resourceType": "ImagingStudy"}
_IDENTIFIER = re.compile(r"'(?:[^'\\]|\\.)*'|`[^`]*`|[$%]?[A-Za-z_][A-Za-z0-9_]*")
# Names that make an expression read beyond the elements it names.
_WHOLE = {"descendants", "children", "repeat", "$this", "ofType", "conformsTo"}
# Names through which an expression reads the `_name` siblings (see the module docstring).
_SIBLINGS = {"extension", "id", "descendants", "children", "repeat"}


def _tokens(expression: str) -> list[str]:
    return _IDENTIFIER.findall(expression)


@functools.lru_cache(maxsize=256)
def reads_siblings(expression: str) -> bool:
    """Whether the expression may read the id or extensions of a primitive (its `_name`
    sibling in FHIR JSON)."""
    return any(token in _SIBLINGS for token in _tokens(expression))


def without_siblings(value: Any) -> Any:
    """`value` without the `_name` keys of its objects, at every depth; the very same object
    where it has none (so a study without primitive extensions is not copied)."""
    if isinstance(value, dict):
        kept = {k: without_siblings(v) for k, v in value.items() if not k.startswith("_")}
        same = len(kept) == len(value) and all(kept[k] is value[k] for k in kept)
        return value if same else kept
    if isinstance(value, list):
        items = [without_siblings(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _errors(result: list[Any]) -> list[str]:
    # fhirpathpy reports some failures (single() on many) as items, not exceptions.
    return [
        str(item.get("$error"))
        for item in result
        if isinstance(item, dict) and item.get("$status") == "error"
    ]


def _run(expression: str, run: Compiled, item: Any) -> list[Any] | None:
    """The result on `item`, or None when the evaluation failed; its time is charged to the
    operation (api/graphql/fhirpath_time.py), and an evaluation stops as soon as it would pass
    what is left of the operation's allowance (one item may take long: a chain of `&` over 200
    instances took 2.8 s)."""
    started = time.monotonic()
    token = timing.deadline.set(started + timing.left())
    try:
        result = run(item if reads_siblings(expression) else without_siblings(item), {})
    except timing.OutOfTime:
        result = None
    except Exception:  # fhirpathpy's evaluation errors have no common base
        return None
    finally:
        timing.deadline.reset(token)
        timing.charge(time.monotonic() - started)
    if result is None:  # out of time: the allowance is spent, whatever the clock said
        timing.charge(timing.left() + 0.001)
        return None
    return None if _errors(result) else result


def run_path(path: str, item: Any) -> list[Any]:
    """An @slice path's value on `item` (time charged as above); FhirPathError when it is
    not an expression this server evaluates, ValueError when it fails on the item."""
    result = _run(path, compiled(path), item)
    if result is None:
        raise ValueError("the path fails on an item")
    return result


def _failed(where: str, on: str) -> Exception:
    # The engine's own message may quote the values it failed on: the stored data, which is
    # not the caller's to see in an error.
    return fail(
        BAD_USER_INPUT,
        where,
        f"the expression fails on {on} (a function or "
        "operator given a value of the wrong type or too many values); guard it, "
        "e.g. with exists() or first()",
    )


def truth(result: list[Any]) -> bool:
    """FHIRPath's boolean reading of a result, as HAPI's evaluateToBoolean: a single boolean is
    itself, an empty collection is false, any other collection is true."""
    if len(result) == 1 and isinstance(result[0], bool):
        return result[0]
    return bool(result)


def evaluate(expression: str, item: Any, where: str) -> list[Any]:
    """The value of `expression` on `item`; an error is BAD_USER_INPUT naming `where`."""
    if len(expression) > MAX_LENGTH:
        raise fail(
            BAD_USER_INPUT,
            where,
            f"an expression may be at most {MAX_LENGTH} characters; this one has {len(expression)}",
        )
    try:
        run = compiled(expression)
    except FhirPathError as error:
        raise fail(
            BAD_USER_INPUT,
            where,
            f"{expression!r} is not a FHIRPath expression this server evaluates: {error}",
        ) from None
    result = _run(expression, run, item)
    if result is None:
        raise _failed(where, "an item")
    return result


def names_read(expression: str, elements: Iterable[str]) -> set[str] | None:
    """The sub-elements a FHIRPath expression on an item may read (for the projection), or
    None when it may read any (`descendants()`, `$this`, an environment variable). With the
    ids and extensions of primitives it reads their `_name` siblings too."""
    known, found = set(elements), set()
    for token in _tokens(expression):
        if token in _WHOLE or token.startswith("%") or token.startswith("`"):
            return None
        if token in known:
            found.add(token)
    if reads_siblings(expression):
        found |= {f"_{name}" for name in found}
    return found


class FhirPath:
    """The `fhirpath` argument of ImagingStudyList and ImagingStudyConnection (HL7 graphql.html):
    one compiled expression, checked before the search runs. A study is kept when the result
    is `true` or, when it is not a single boolean, not empty."""

    def __init__(self, expression: str, max_length: int) -> None:
        if not expression.strip():
            raise fail(BAD_USER_INPUT, ARGUMENT, "the expression must not be empty")
        if len(expression) > max_length:
            raise fail(
                BAD_USER_INPUT,
                ARGUMENT,
                f"the expression may be at most {max_length} characters; it has {len(expression)}",
            )
        self._expression = expression
        try:
            self._compiled = compiled(expression)
            # fhirpathpy finds syntax and arity errors when it evaluates: on an empty study,
            # whose error can only be about the expression.
            found = _errors(self._compiled(_EMPTY_STUDY, {}))
        except Exception as error:  # the engine raises plain Exceptions
            raise fail(
                BAD_USER_INPUT,
                ARGUMENT,
                f"not a FHIRPath expression this server can evaluate: {error}",
            ) from None
        if found:
            raise fail(BAD_USER_INPUT, ARGUMENT, f"the expression fails: {found[0]}")

    @classmethod
    def given(cls, expression: str | None, max_length: int) -> FhirPath | None:
        """The compiled expression, or None when the argument was not given."""
        return None if expression is None else cls(expression, max_length)

    def keeps(self, study: Study) -> bool:
        """Whether the expression holds on `study`. An error names no value of the study:
        the message of the engine may quote one."""
        result = _run(self._expression, self._compiled, study)
        if result is None:
            raise _failed(ARGUMENT, "a study the search found")
        return truth(result)

    @staticmethod
    def priced(shape: Shape, keep: FhirPath | None) -> Shape:
        """`shape`, priced as whole studies when an expression reads them: the operation's
        budget of returned values then bounds the evaluation work as it bounds fhirJson."""
        shape.json = shape.json or keep is not None
        return shape

    async def filtered(self, studies: list[Study]) -> list[Study]:
        """The studies the expression keeps, evaluated on a worker thread of a pool of its
        own: the event loop, and the writes' worker threads, go on serving others."""
        work = contextvars.copy_context().run  # the operation's budget goes along
        return await asyncio.get_running_loop().run_in_executor(
            POOL, lambda: work(self.filter, studies)
        )

    def filter(self, studies: list[Study]) -> list[Study]:
        """The studies the expression keeps, in order (its time charged to the operation)."""
        return [study for study in studies if self.keeps(study)]
