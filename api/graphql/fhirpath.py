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
`MAX_SECONDS` before the query is rejected."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import fhirpathpy
from fhirpathpy import engine as fhirpath_engine
from fhirpathpy import parser as fhirpath_parser
from fhirpathpy.models import models

from api.graphql.limits import rejected
from store.fhir import Study
from store.fhir.outcome import BAD_USER_INPUT, fail

if TYPE_CHECKING:  # api.graphql.budget reads the projection, which reads names_read here
    from api.graphql.budget import Shape

ARGUMENT = "fhirpath"
# Characters of an expression on a repeating element or in @slice (the search's own is
# IMAGING_SEARCH_MAX_VALUE_LENGTH): parsing costs with the text, off the loop (precompile).
MAX_LENGTH = 4_096
MAX_SECONDS = 2.0  # of evaluation per operation; a study's size is capped, an expression is not
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fhirpath")
# Of that, what may run on the event loop itself (repeating elements' resolvers evaluate there).
LOOP_SECONDS = 0.5
# And of every second, what all operations together may spend so (found black-box: twenty
# requests at once, each within its own 0.5 s, held the loop 10 s): past it, an evaluation on
# the loop is refused until the next second.
SHARED_LOOP_SECONDS = 0.2
_shared = [0.0, 0.0]  # the current second's start (time.monotonic()) and what it has used


def _shared_left() -> float:
    now = time.monotonic()
    if now - _shared[0] >= 1.0:
        _shared[0], _shared[1] = now, 0.0
    return SHARED_LOOP_SECONDS - _shared[1]


DESCRIPTION = (
    "A FHIRPath expression evaluated on each study the search finds; a study is "
    "kept when it gives true (or, not a boolean, anything at all). Applied after the "
    "store's page is read, so a page may hold fewer than _count studies; counts are "
    "of the search before it."
)
Compiled = Callable[..., list[Any]]
# A study with a failure only an expression can cause: what the search-level probe runs on.
_EMPTY_STUDY = {"resourceType": "ImagingStudy"}
_IDENTIFIER = re.compile(r"'(?:[^'\\]|\\.)*'|`[^`]*`|[$%]?[A-Za-z_][A-Za-z0-9_]*")
# Names that make an expression read beyond the elements it names.
_WHOLE = {"descendants", "children", "repeat", "$this", "ofType", "conformsTo"}
# Names through which an expression reads the `_name` siblings (see the module docstring).
_SIBLINGS = {"extension", "id", "descendants", "children", "repeat"}


# The functions served: those whose cost follows the data they are given. Left out, each for
# a reason an anonymous caller could use: repeat() and aggregate() loop without bound (a string
# doubled thirty times), matches() and replaceMatches() backtrack exponentially, trace() writes
# the data to the log, descendants() walks every node of a 50,000-instance study, and
# replace(), combine(), encode() and power() grow their result at every call; intersect(),
# exclude(), subsetOf() and supersetOf() compare every item with every other (31 s on a
# 20,000-instance study).
ALLOWED_FUNCTIONS = frozenset(
    {
        "empty",
        "exists",
        "all",
        "allTrue",
        "anyTrue",
        "allFalse",
        "anyFalse",
        "count",
        "distinct",
        "isDistinct",
        "where",
        "select",
        "ofType",
        "single",
        "first",
        "last",
        "tail",
        "skip",
        "take",
        "union",
        "iif",
        "not",
        "toBoolean",
        "convertsToBoolean",
        "toInteger",
        "convertsToInteger",
        "toDecimal",
        "convertsToDecimal",
        "toString",
        "convertsToString",
        "toDate",
        "convertsToDate",
        "toDateTime",
        "convertsToDateTime",
        "toTime",
        "convertsToTime",
        "toQuantity",
        "convertsToQuantity",
        "indexOf",
        "substring",
        "startsWith",
        "endsWith",
        "contains",
        "upper",
        "lower",
        "length",
        "children",
        "extension",
        "hasValue",
        "is",
        "as",
        "today",
        "now",
        "abs",
        "ceiling",
        "floor",
        "round",
        "truncate",
        "sqrt",
        "ln",
        "log",
        "exp",
    }
)
# Functions that evaluate their argument once per item: each nests a loop over a collection.
ITERATIVE = frozenset({"where", "select", "all", "exists"})
MOST_ITERATIVE = 4  # so a chain of select($this & $this) grows a value at most 16-fold
# Literal items made by unions are what per-item functions multiply (and each union step runs a
# distinct over what it has): (0|1|...|199).select(the same) took 17 s. With at most 8, the
# worst nesting of four select() over them stays in milliseconds.
MOST_UNIONS = 8


class FhirPathError(Exception):
    """A FHIRPath expression that does not parse, or that this server does not serve."""


def _refusals(node: Any) -> Iterator[str]:
    """Why the parsed expression is not served, if it is not: functions outside the allowed
    set, environment variables (%context and the like reach past the item), more than
    MOST_ITERATIVE per-item functions."""
    iterative = unions = 0
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        kind = current.get("type")
        children = current.get("children") or []
        if kind == "UnionExpression":
            unions += 1
        if kind == "ExternalConstantTerm":
            yield "environment variables (%name) are not served: navigate from the item"
        elif kind == "Functn" and children and isinstance(children[0], dict):
            name = str(children[0].get("text", ""))
            if name not in ALLOWED_FUNCTIONS:
                yield (
                    f"{name}() is not served here (it can take unbounded time or memory, "
                    "or write the data to the log)"
                )
            elif name in ITERATIVE and len(children) > 1:
                iterative += 1
            elif name == "union":
                unions += 1
        stack.extend(children)
    if unions > MOST_UNIONS:
        yield (
            f"at most {MOST_UNIONS} unions (| or union()) in one expression (this one has "
            f"{unions}): a union of many items under select() costs their number to a power"
        )
    if iterative > MOST_ITERATIVE:
        yield (
            f"at most {MOST_ITERATIVE} where(), select(), all() or exists(criteria) in one "
            f"expression (this one has {iterative})"
        )


def compiled(expression: str) -> Compiled:
    """The expression compiled once per text (fhirpathpy parses on every evaluate), with the
    R5 model (choice types: an extension's `value`), once it is known to be served;
    FhirPathError when it is not."""
    made = _compile(expression)
    if isinstance(made, str):
        raise FhirPathError(made)
    return made


# Refusals are kept too, as their message: an expression that does not parse costs its parse
# once, like one that does (`precompile` relies on it).
@functools.lru_cache(maxsize=1024)
def _compile(expression: str) -> Compiled | str:
    try:
        # The parser prints its lexer's complaints to standard output, outside the log's
        # format (one line per request a caller can add): they go nowhere; the error says it.
        with contextlib.redirect_stdout(io.StringIO()):
            tree: Any = fhirpath_parser.parse(expression)  # type: ignore[no-untyped-call]
    except Exception as error:  # fhirpathpy raises its parser's own exception types
        return str(error) or type(error).__name__
    refused = sorted(set(_refusals(tree)))
    if refused:
        return "; ".join(refused)
    try:
        run: Compiled = fhirpathpy.compile(expression, models["r5"])
        return run
    except Exception as error:
        return str(error) or type(error).__name__


async def precompile(expressions: Iterable[str], max_length: int) -> None:
    """Compiles `expressions` on a worker thread of the FHIRPath pool, so the resolvers that
    use them find them compiled: parsing costs with the text (about 0.3 ms per character),
    which on the event loop would hold every other request. Longer ones than `max_length`
    are left to be refused unparsed."""
    todo = [e for e in dict.fromkeys(expressions) if len(e) <= max_length]
    if todo:
        await asyncio.get_running_loop().run_in_executor(_POOL, lambda: [_compile(e) for e in todo])


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
    operation (see `_charge`), and an evaluation stops as soon as it would pass what is left
    of the operation's allowance (one item may take long: a chain of `&` over 200 instances
    took 2.8 s)."""
    started = time.monotonic()
    token = _deadline.set(started + _left())
    try:
        result = run(item if reads_siblings(expression) else without_siblings(item), {})
    except _OutOfTime:
        result = None
    except Exception:  # fhirpathpy's evaluation errors have no common base
        return None
    finally:
        _deadline.reset(token)
        _charge(time.monotonic() - started)
    if result is None:  # out of time: the allowance is spent, whatever the clock said
        _charge(_left() + 0.001)
        return None
    return None if _errors(result) else result


class _OutOfTime(Exception):
    """An evaluation passed its deadline (raised inside fhirpathpy's evaluator)."""


# When the current evaluation must stop (time.monotonic()), or None outside one.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "fhirpath_deadline", default=None
)


def _left() -> float:
    """Seconds of FHIRPath evaluation the current operation has left (on the event loop, of
    its share there); an evaluation outside an operation gets the event loop's share."""
    from api.graphql import budget  # not at import: budget -> projection -> this module

    spent = budget.current.get()
    on_loop = _on_the_loop()
    if spent is None:
        return max(min(LOOP_SECONDS, _shared_left()), 0.0) if on_loop else LOOP_SECONDS
    left = MAX_SECONDS - spent.fhirpath_seconds
    if on_loop:
        left = min(left, LOOP_SECONDS - spent.fhirpath_loop_seconds, _shared_left())
    return max(left, 0.0)


def _watched(evaluate: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """fhirpathpy's node evaluator, stopping at the deadline: every node of an expression is
    evaluated through it, so no evaluation runs far past its time."""

    def do_eval(ctx: Any, parent: Any, node: Any) -> Any:
        deadline = _deadline.get()
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime
        return evaluate(ctx, parent, node)

    return do_eval


# fhirpathpy evaluates every node through `engine.do_eval` (its evaluators call it by that
# name); the one public entry point imported it by name too. Both are wrapped once, here.
fhirpath_engine.do_eval = _watched(fhirpath_engine.do_eval)
fhirpathpy.do_eval = fhirpath_engine.do_eval  # type: ignore[attr-defined]


def _charge(seconds: float) -> None:
    """Adds to the FHIRPath time of the current operation, all of its expressions together
    (searches, repeating elements, @slice), refusing it past MAX_SECONDS: an expression whose
    cost follows the data may still meet a lot of data."""
    from api.graphql import budget  # not at import: budget -> projection -> this module

    spent = budget.current.get()
    if _on_the_loop():
        _shared_left()  # a new second starts afresh
        _shared[1] += seconds
        if _shared[1] > SHARED_LOOP_SECONDS:
            raise rejected(
                "milliseconds of FHIRPath evaluation on the event loop in this second, by all "
                "requests together",
                int(SHARED_LOOP_SECONDS * 1000),
                int(_shared[1] * 1000),
                "retry in a second, or move the expression to the search's own fhirpath, "
                "which runs on a pool of its own",
            )
    if spent is None:
        return
    spent.fhirpath_seconds += seconds
    if spent.fhirpath_seconds > MAX_SECONDS:
        raise rejected(
            "seconds of FHIRPath evaluation",
            int(MAX_SECONDS),
            f"{spent.fhirpath_seconds:.1f}",
            "narrow the search, page the lists the expression runs on, or simplify the expression",
        )
    if _on_the_loop():  # a repeating element's resolver: every other request waits on it
        spent.fhirpath_loop_seconds += seconds
        if spent.fhirpath_loop_seconds > LOOP_SECONDS:
            raise rejected(
                "milliseconds of FHIRPath evaluation on repeating elements",
                int(LOOP_SECONDS * 1000),
                int(spent.fhirpath_loop_seconds * 1000),
                "use a field filter (series(modality: ...), instance(uid: ...)), "
                "give the lists a _count, or move the expression to the search's "
                "own fhirpath",
            )


def _on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker thread: the loop goes on meanwhile
        return False
    return True


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
            _POOL, lambda: work(self.filter, studies)
        )

    def filter(self, studies: list[Study]) -> list[Study]:
        """The studies the expression keeps, in order (its time charged as `_charge` says)."""
        return [study for study in studies if self.keeps(study)]
