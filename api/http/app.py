"""create_app(settings, store=None) -> the Starlette app. The lifespan opens the store (embedded
or MongoDB) unless a store is passed in, which is how tests plug in their own."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from strawberry import Schema
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from api.access.audit import AuditLog
from api.access.auth import Authenticator
from api.graphql.context import Context
from api.graphql.schema import build_schema, limits
from api.graphql.selection import operation_fields
from api.http import apollo_cache, graphiql, ops
from api.http.answers import Refusal, answer_media
from api.http.compression import Compress
from api.http.logs import configure as configure_logs
from api.http.middleware import (
    BodyLimit,
    BodyTimeout,
    Cors,
    Explainer,
    HostCheck,
    RequestId,
)
from api.http.persisted import PersistedQueries
from api.http.view import GraphQLOverHTTP
from api.http.websocket import Socket, TransportWS
from api.settings import Settings
from api.transfer.stream import run_import
from api.transfer.targets import LocalTarget
from store.fhir.outcome import StoreError
from store.interop.demo import seed
from store.interop.ingest import Ingest
from store.mongo import client
from store.mongo.events import Bus, ChangeStreamFeeder
from store.mongo.indexes import IndexConflict
from store.mongo.repository import Repository

log = logging.getLogger("imaging.api")
STATIC = Path(__file__).parent / "static"
INDEX_RETRY_SECONDS = 5.0


def graphiql_page() -> str:
    """The GraphiQL page (api/http/graphiql.py), its scripts served from api/http/static/vendor."""
    return graphiql.page()


class _OwnOriginLine(logging.Filter):
    """Drops Strawberry's line for a refused WebSocket origin, which names its own parameter
    (`allowed_origins`): this service logs its own, naming IMAGING_CORS_ORIGINS."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Rejected WebSocket connection from origin")


logging.getLogger("strawberry.ws").addFilter(_OwnOriginLine())


class _GraphQL(GraphQLOverHTTP, GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWS
    websocket_adapter_class = Socket
    schema: Schema  # what build_schema makes; the ASGI view declares only its base class

    def __init__(
        self, settings: Settings, metrics: ops.Metrics, bus: Bus, explain: Explainer
    ) -> None:
        schema = build_schema(
            settings, extra=[partial(AuditLog, operation_fields), metrics.extension]
        )
        # Only graphql-transport-ws: the legacy graphql-ws protocol would bypass the token's
        # checks at connection_init and at exp (api/http/websocket.py). Browsers get the Origin
        # check of CORS: the same origins may drive the API over either transport.
        super().__init__(
            schema,
            graphql_ide=None if settings.production else "graphiql",
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=settings.max_subscriptions,
            allowed_origins=settings.cors_origins,
        )
        self.settings = settings
        self.metrics = metrics
        self.bus = bus
        self.authenticator = Authenticator(settings)
        self.explain = explain
        self.persisted = PersistedQueries(settings.persisted_query_bytes)
        self.limits = limits(settings)

    async def get_context(self, request: Any, response: Any) -> Context:
        return Context(
            _repo=request.app.state.repo,
            settings=self.settings,
            request=request,
            response=response,
            events=self.bus,
            authenticator=self.authenticator,
            authorization=request.headers.get("authorization"),
            rooted_at=request.path_params.get("id"),
        )

    def is_websocket_origin_allowed(self, request: Any, origin: str) -> bool:
        allowed = super().is_websocket_origin_allowed(request, origin)
        if not allowed:
            self.explain.refused_origin(origin, "a WebSocket")
        return allowed

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(graphiql_page())

    def encode_json(self, data: object) -> bytes:
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError:
            # Only a string orjson cannot write (a lone surrogate, echoed from the caller's
            # own input in an error message) gets here; json escapes it.
            return json.dumps(data, separators=(",", ":")).encode()

    def decode_json(self, data: str | bytes) -> object:
        # orjson refuses what json would crash on (bytes that are not UTF-8) with a
        # JSONDecodeError, which api/http/view.py answers with 400.
        return orjson.loads(data)


async def _not_found(request: Request, _: Exception) -> Response:
    """An unknown path answers in the body every other refusal has (a client that posts to a
    wrong URL shows the message, not a bare network error)."""
    refused = Refusal(
        404,
        f"no such endpoint: {request.url.path[:100]}; GraphQL is served at "
        "/graphql (and /$graphql)",
        issue="not-found",
    )
    status, headers, body = refused.answer(answer_media(request.headers.get("accept")))
    return Response(body, status_code=status, headers=headers)


def open_repository(settings: Settings, events: Bus | None = None) -> tuple[Any, Repository]:
    """The store the settings name: MongoDB at MONGODB_URI, else the embedded one."""
    if settings.mongodb_uri:
        handle, db = client.open_server(
            settings.mongodb_uri,
            settings.mongodb_db,
            serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
            connectTimeoutMS=settings.mongodb_timeout_ms,
            w=settings.mongodb_write_concern,
            retryWrites=settings.mongodb_retry_writes,
        )
    else:
        handle, db = client.open_embedded(settings.mongodb_db)
    return handle, Repository(
        db,
        max_instances=settings.max_instances,
        max_series=settings.max_series,
        cursor_secret=settings.cursor_secret.encode(),
        events=events,
        cache_bytes=settings.cache_mb * 2**20,
    )


SWITCH_INTERVAL = 0.001  # seconds a busy thread keeps the interpreter lock when others wait


def settle_collector() -> None:
    """Once loaded: what is in memory by now (the embedded store's data, the schema) lives as
    long as the process, so it is frozen out of the collector's sight and not rescanned by
    every full collection; and the youngest generation is collected after 50,000 new objects
    rather than 700, since a response builds two dicts per instance (20,000 for a
    10,000-instance study) that the collector would otherwise walk several times before they
    are freed (`make bench`: about a tenth of the execution time of scenarios A and B). The
    garbage cycles a request leaves are few and small, so they wait a little longer."""
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    # The event loop shares the interpreter with threads that do pure-Python work (parsing and
    # validating new documents, the embedded store, FHIRPath, the write rules). Each time the
    # loop waits on a socket it gives up the interpreter lock and then waits for a busy thread
    # to hand it back, by default after up to 5 ms: a /healthz, several such waits, took 33 ms
    # (p50) while eight clients sent new 36 KB documents, 8 ms at 1 ms. The loop gets it back
    # five times sooner, for a few microseconds more of switching per millisecond of work.
    sys.setswitchinterval(SWITCH_INTERVAL)


async def _ensure_indexes(repo: Repository) -> None:
    """Creates the indexes, retrying in the background while the store is down, so the
    service starts (and answers STORE_UNAVAILABLE) instead of failing to start."""
    while True:
        try:
            await repo.ensure_indexes()
            return
        except IndexConflict as conflict:
            log.error("%s", conflict)  # the data must be put right: retrying cannot help
            return
        except StoreError:
            log.warning("store unavailable; creating indexes again in %ss", INDEX_RETRY_SECONDS)
            await asyncio.sleep(INDEX_RETRY_SECONDS)


async def _preload(settings: Settings, repo: Repository) -> None:
    if settings.embedded and settings.seed:
        ids = await seed(repo)
        log.info("embedded store seeded with %d demo studies and pydicom's test files", len(ids))
    if settings.preload:
        report = await run_import(LocalTarget(repo), list(settings.preload), out=sys.stderr)
        log.info("imported at start-up:\n%s", report.table())
    if settings.preload_dicom:
        ingested = await Ingest(LocalTarget(repo)).run(settings.preload_dicom)
        log.info("DICOM ingested at start-up:\n%s", ingested.table())


def create_app(settings: Settings, store: Repository | None = None) -> Starlette:
    metrics = ops.Metrics()
    # The cursor secret also keys event positions, so all workers give an event the same one.
    bus = Bus(
        backlog=settings.subscriber_backlog,
        history=settings.event_history,
        secret=settings.cursor_secret.encode(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if store is not None:
            settle_collector()
            yield
            return
        handle, repo = open_repository(settings, None if settings.mongodb_uri else bus)
        tasks = [asyncio.create_task(_ensure_indexes(repo))]
        if settings.mongodb_uri:  # other processes write too: watch the collection
            tasks.append(asyncio.create_task(ChangeStreamFeeder(repo._studies, bus).run()))
        else:
            await tasks[0]
        await _preload(settings, repo)
        settle_collector()
        app.state.repo = ops.Timed(repo, metrics)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            client.close(handle)

    async def home(_: Request) -> Response:
        return RedirectResponse("/graphql")

    explain = Explainer()  # one log of refused origins for CORS and WebSockets alike
    graphql = _GraphQL(settings, metrics, bus, explain)
    routes = [
        Route("/graphql", graphql),  # other methods: a JSON 405 (api/http/view.py)
        WebSocketRoute("/graphql", graphql),
        # FHIR's $graphql: the system endpoint is /graphql by its FHIR name; one study's
        # runs its query with that study as the root (api/http/instance.py).
        Route("/$graphql", graphql),
        WebSocketRoute("/$graphql", graphql),
        Route("/ImagingStudy/{id}/$graphql", graphql),
        Route("/healthz", ops.healthz),
        Route("/readyz", ops.readyz),
        Route("/metrics", metrics.endpoint),
    ]
    if not settings.production:
        routes += [
            Route("/", home),
            Mount("/static", StaticFiles(directory=STATIC)),
            Route("/apollo-cache.js", apollo_cache.endpoint(graphql.schema)),
        ]
    middleware = [
        Middleware(RequestId),
        # Without authentication, the Host is what tells a DNS-rebinding page apart.
        *(
            [Middleware(HostCheck, allowed=settings.allowed_hosts)]
            if settings.auth == "off"
            else []
        ),
        Middleware(BodyTimeout, seconds=settings.body_timeout_seconds),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        # zstd or gzip as the client asks, at levels chosen by measurement (compression.py).
        Middleware(Compress),
        # Even with no origin allowed: a refused preflight is then logged.
        Middleware(Cors, origins=settings.cors_origins, explain=explain),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={404: _not_found},
    )
    app.state.metrics = metrics
    app.state.events = bus
    if store is not None:
        store.events = store.events or bus
        app.state.repo = ops.Timed(store, metrics)
    return app


def from_env() -> Starlette:
    """The app as `uvicorn --factory api.http.app:from_env` (and each of several workers) makes
    it."""
    settings = Settings.from_env()
    configure_logs(fmt=settings.log_format)  # a worker process starts with no logging set up
    return create_app(settings)
