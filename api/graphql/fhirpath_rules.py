"""Which FHIRPath expressions this server evaluates, and their compilation: a bounded set of
functions (those whose cost follows the data given), no environment variables, few per-item
functions and unions; each text parsed and compiled once (refusals kept too), on a pool of its
own before the operation runs, since parsing costs about 0.3 ms per character."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fhirpathpy
from fhirpathpy import parser as fhirpath_parser
from fhirpathpy.models import models

Compiled = Callable[..., list[Any]]
# Compiles expressions ahead of an operation and evaluates the search-level argument.
POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fhirpath")

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
        await asyncio.get_running_loop().run_in_executor(POOL, lambda: [_compile(e) for e in todo])
