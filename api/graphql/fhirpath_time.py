"""How long FHIRPath may run, and where: each operation has MAX_SECONDS of evaluation, of
which LOOP_SECONDS on the event loop (a repeating element's resolver evaluates there, so every
other request waits on it), and all operations together SHARED_LOOP_SECONDS of each second on
the loop. An evaluation is stopped inside fhirpathpy's evaluator once it passes what its
operation has left (`deadline`), not only charged after it: one item may take seconds."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy import engine as fhirpath_engine

from api.graphql.limits import rejected

MAX_SECONDS = 2.0  # of evaluation per operation; a study's size is capped, an expression is not
# Of that, what may run on the event loop itself (repeating elements' resolvers evaluate there).
LOOP_SECONDS = 0.5
# And of every second, what all operations together may spend so (found black-box: twenty
# requests at once, each within its own 0.5 s, held the loop 10 s): past it, an evaluation on
# the loop is refused until the next second.
SHARED_LOOP_SECONDS = 0.2
_shared = [0.0, 0.0]  # the current second's start (time.monotonic()) and what it has used


def _sharedleft() -> float:
    now = time.monotonic()
    if now - _shared[0] >= 1.0:
        _shared[0], _shared[1] = now, 0.0
    return SHARED_LOOP_SECONDS - _shared[1]


class OutOfTime(Exception):
    """An evaluation passed its deadline (raised inside fhirpathpy's evaluator)."""


# When the current evaluation must stop (time.monotonic()), or None outside one.
deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "fhirpathdeadline", default=None
)


def left() -> float:
    """Seconds of FHIRPath evaluation the current operation has left (on the event loop, of
    its share there); an evaluation outside an operation gets the event loop's share."""
    from api.graphql import budget  # not at import: budget -> projection -> this module

    spent = budget.current.get()
    on_loop = on_the_loop()
    if spent is None:
        return max(min(LOOP_SECONDS, _sharedleft()), 0.0) if on_loop else LOOP_SECONDS
    left = MAX_SECONDS - spent.fhirpath_seconds
    if on_loop:
        left = min(left, LOOP_SECONDS - spent.fhirpath_loop_seconds, _sharedleft())
    return max(left, 0.0)


def _watched(evaluate: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """fhirpathpy's node evaluator, stopping at the deadline: every node of an expression is
    evaluated through it, so no evaluation runs far past its time."""

    def do_eval(ctx: Any, parent: Any, node: Any) -> Any:
        until = deadline.get()
        if until is not None and time.monotonic() > until:
            raise OutOfTime
        return evaluate(ctx, parent, node)

    return do_eval


# fhirpathpy evaluates every node through `engine.do_eval` (its evaluators call it by that
# name); the one public entry point imported it by name too. Both are wrapped once, here.
fhirpath_engine.do_eval = _watched(fhirpath_engine.do_eval)
fhirpathpy.do_eval = fhirpath_engine.do_eval  # type: ignore[attr-defined]


def charge(seconds: float) -> None:
    """Adds to the FHIRPath time of the current operation, all of its expressions together
    (searches, repeating elements, @slice), refusing it past MAX_SECONDS: an expression whose
    cost follows the data may still meet a lot of data."""
    from api.graphql import budget  # not at import: budget -> projection -> this module

    spent = budget.current.get()
    if on_the_loop():
        _sharedleft()  # a new second starts afresh
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
    if on_the_loop():  # a repeating element's resolver: every other request waits on it
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


def on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker thread: the loop goes on meanwhile
        return False
    return True
