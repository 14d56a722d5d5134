"""What a query really returns, counted on the studies read before the response is built.

The cost limit prices a document before it runs, by the most each list could hold; a study's
series and instances are priced at the store's caps, so the limit must leave room for a viewer
opening the largest study. Thirty aliases of that one study, or a page of large studies, stay
under it and still make seconds of work on the only event loop. So each operation also has a
budget of returned values, charged with the actual size of every study a resolver read, before
any of it is completed into the response: once spent, the operation is refused
(QUERY_REJECTED) and the studies still to come are not even read, since reads of large studies
run one after another within an operation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.graphql.limits import rejected
from api.graphql.selection import Field
from store.fhir import Study

T = TypeVar("T")
# Values per instance and per series of a study's FHIR JSON, as fhirJson returns them.
JSON_PER_INSTANCE, JSON_PER_SERIES, JSON_PER_STUDY = 12, 12, 40


class Budget:
    """One operation's allowance: values returned, and seconds spent waiting on the store."""

    def __init__(
        self, limit: int, store_seconds: float = float("inf"), reference_reads: int = 100
    ) -> None:
        self.limit = limit
        self.spent = 0
        self.store_limit = store_seconds
        self.store_spent = 0.0
        self.lock = asyncio.Lock()  # the reads of one operation go one at a time
        # The studies read so far (a `#id` reference resolves in the study holding it), and
        # how many studies references may read (api/graphql/types/references.py).
        self.read: list[dict[str, Any]] = []
        self.reference_reads = reference_reads
        self.fhirpath_seconds = 0.0  # spent evaluating FHIRPath (api/graphql/fhirpath.py)
        self.fhirpath_loop_seconds = 0.0  # of which on the event loop

    def check(self) -> None:
        if self.spent > self.limit:
            raise self._refusal()
        if self.store_spent > self.store_limit:
            raise rejected("store seconds", int(self.store_limit), f"{self.store_spent:.1f}")

    def charge(self, units: int) -> None:
        self.spent += units
        self.check()

    def _refusal(self) -> GraphQLError:
        error = rejected("returned values", self.limit, self.spent)
        error.message += (
            "; ask for fewer studies or page the instances (series { instance("
            "_count: ..., _offset: ...) })"
        )
        return error


current: ContextVar[Budget | None] = ContextVar("result_budget", default=None)


class ResultBudget(SchemaExtension):
    """Gives each operation its budget (a factory makes one extension per operation)."""

    def __init__(
        self, limit: int, store_seconds: float = float("inf"), reference_reads: int = 100
    ) -> None:
        self.limit = limit
        self.store_seconds = store_seconds
        self.reference_reads = reference_reads

    def on_execute(self) -> Iterator[None]:
        token = current.set(Budget(self.limit, self.store_seconds, self.reference_reads))
        try:
            yield
        finally:
            current.reset(token)


class Shape:
    """How many values a selection on ImagingStudy makes per study, series and instance
    (`fields`: the selection's, `Selection.fields()`)."""

    def __init__(self, fields: Iterable[Field]) -> None:
        self.study = self.series = self.instance = 0
        self.json = False
        self.series_count: int | None = None
        self.instance_count: int | None = None
        for field in fields:
            if field.name == "fhirJson":
                self.json = True
            elif field.name == "series":
                self.series_count = _count(field)
                for below in field.below().fields():
                    if below.name == "instance":
                        self.instance_count = _count(below)
                        self.instance += 1 + _size(below)
                    else:
                        self.series += 1 + _size(below)
                self.study += 1
            else:
                self.study += 1 + _size(field)

    @property
    def heavy(self) -> bool:
        """Whether a study's size can matter: its instances or its whole JSON are asked."""
        return self.json or self.instance > 0

    def units(self, study: dict[str, Any]) -> int:
        series = study.get("series") or []
        total = self.study
        for one in series[: self.series_count]:
            instances = len(one.get("instance") or ())
            total += (
                1 + self.series + min(instances, self.instance_count or instances) * self.instance
            )
        if self.json:
            total += (
                JSON_PER_STUDY
                + JSON_PER_SERIES * len(series)
                + JSON_PER_INSTANCE * sum(len(one.get("instance") or ()) for one in series)
            )
        return total


def _count(field: Field) -> int | None:
    value = field.arguments.get("_count")
    if value is None:
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        return None
    return count if count >= 0 else None


def _size(field: Field) -> int:
    """The values a field makes below itself, per object it is resolved on."""
    return sum(1 + _size(below) for below in field.below().fields())


def _studies_in(found: object) -> list[Study]:
    """The studies a read returned: a list of them, one, or none (a count returns none)."""
    if isinstance(found, list):
        return found
    return [found] if isinstance(found, dict) and found else []


async def reading(
    shape: Shape,
    read: Callable[[], Awaitable[T]],
    studies: Callable[[T], list[Study]] = _studies_in,
) -> T:
    """Runs `read` and charges it to the operation's budget: the time it waited on the store,
    and for a heavy selection the values of the studies it returned. The reads of one
    operation run one after another, and none starts once either allowance is spent."""
    budget = current.get()
    if budget is None:
        return await read()
    async with budget.lock:
        budget.check()
        started = time.monotonic()
        try:
            found = await read()
        finally:
            budget.store_spent += time.monotonic() - started
        returned = studies(found)
        budget.read += (study for study in returned if isinstance(study, dict))
        if shape.heavy:
            budget.charge(sum(shape.units(study) for study in returned))
    return found
