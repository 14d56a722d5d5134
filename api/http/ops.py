"""Operations: /healthz, /readyz and /metrics (Prometheus), and the per-operation and
per-store-call measurements behind them."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLSchema
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.extensions import SchemaExtension

from api.access.audit import ended, outcome_of, raised_errors, ran
from api.graphql.selection import operation_fields
from store.fhir.outcome import StoreError

READY_TIMEOUT = 2.0


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imaging_requests",
            "GraphQL operations by name and outcome",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imaging_request_seconds",
            "GraphQL operation latency",
            ["operation"],
            registry=self.registry,
        )
        self.store = Histogram(
            "imaging_store_seconds", "Store call latency", ["call"], registry=self.registry
        )
        self.subscriptions = Gauge(
            "imaging_subscriptions", "Open GraphQL subscriptions", registry=self.registry
        )

        # The labelled children, found once: prometheus_client's `labels` locks and checks.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        """One operation's count and latency."""
        children = self._children.get((operation, outcome))
        if children is None:
            children = (
                self.requests.labels(operation, outcome),
                self.latency.labels(operation),
            )
            self._children[(operation, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def extension(self) -> SchemaExtension:
        return _Observe(self)

    async def endpoint(self, _: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def operation_label(schema: GraphQLSchema, fields: list[str]) -> str:
    """The metrics label of an operation: its root field when it names one field of the
    schema, else `multiple` or `unknown`. Never a name the caller chose (an operationName,
    an alias, an unknown field): each distinct label is a series kept for the process's life."""
    known = {
        name
        for root in (schema.query_type, schema.mutation_type, schema.subscription_type)
        if root is not None
        for name in root.fields
    }
    named = {name for name in fields if name in known}
    if len(named) == 1:
        return named.pop()
    return "multiple" if named else "unknown"


class _Observe(SchemaExtension):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_operation(self) -> Iterator[None]:
        start = time.perf_counter()
        with ended(lambda raised: self._count(start, raised)):  # left early too
            yield

    def _count(self, start: float, raised: BaseException | None) -> None:
        context = self.execution_context
        kind, fields = operation_fields(context) if ran(context, raised) else ("unknown", [])
        name = operation_label(context.schema._schema, fields)
        result = context.result
        errors = getattr(result, "errors", None) if result is not None else None
        errors = errors or context.pre_execution_errors or raised_errors(raised, kind)
        self.metrics.observe(name, outcome_of(errors)[1], time.perf_counter() - start)


class Timed:
    """A repository whose coroutine methods report their latency to `metrics.store`."""

    def __init__(self, repo: Any, metrics: Metrics) -> None:
        self._repo = repo
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._repo, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        histogram, repo = self._metrics.store.labels(name), self._repo

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await getattr(repo, name)(*args, **kwargs)  # the method as it is now
            finally:
                histogram.observe(time.perf_counter() - start)

        setattr(self, name, timed)  # kept: __getattr__ is asked only the first time
        return timed


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the store answers a ping within READY_TIMEOUT seconds."""
    try:
        await asyncio.wait_for(request.app.state.repo.ping(), READY_TIMEOUT)
    except (TimeoutError, StoreError) as error:
        return JSONResponse(
            {"status": "unavailable", "reason": type(error).__name__}, status_code=503
        )
    return JSONResponse({"status": "ready"})
