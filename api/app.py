"""create_app(settings, store=None) -> the Starlette app. The lifespan opens the store (embedded
or MongoDB) unless a store is passed in, which is how tests plug in their own."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL

from api.context import Context
from api.schema import schema
from api.settings import Settings
from api.targets import LocalTarget
from api.transfer import run_import
from store import client
from store.demo import seed
from store.ingest import Ingest
from store.repository import Repository

log = logging.getLogger("imaging.api")


class _GraphQL(GraphQL[Context, None]):
    def __init__(self, settings: Settings) -> None:
        super().__init__(schema, graphql_ide="graphiql")
        self.settings = settings

    async def get_context(self, request: Any, response: Any) -> Context:
        return Context(repo=request.app.state.repo, settings=self.settings, request=request,
                       response=response)


def open_repository(settings: Settings) -> tuple[Any, Repository]:
    """The store the settings name: MongoDB at MONGODB_URI, else the embedded one."""
    if settings.mongodb_uri:
        handle, db = client.open_server(settings.mongodb_uri, settings.mongodb_db)
    else:
        handle, db = client.open_embedded(settings.mongodb_db)
    return handle, Repository(db, max_instances=settings.max_instances,
                              cursor_secret=settings.cursor_secret.encode())


def create_app(settings: Settings, store: Repository | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if store is not None:
            app.state.repo = store
            yield
            return
        handle, repo = open_repository(settings)
        await repo.ensure_indexes()
        if settings.embedded and settings.seed:
            ids = await seed(repo)
            log.info("embedded store seeded with %d demo studies", len(ids))
        if settings.preload:
            report = await run_import(LocalTarget(repo), list(settings.preload), out=sys.stderr)
            log.info("imported at start-up:\n%s", report.table())
        if settings.preload_dicom:
            ingested = await Ingest(repo).run(settings.preload_dicom)
            log.info("DICOM ingested at start-up:\n%s", ingested.table())
        app.state.repo = repo
        try:
            yield
        finally:
            client.close(handle)

    async def home(_: Request) -> Response:
        return RedirectResponse("/graphql")

    graphql = _GraphQL(settings)
    routes = [Route("/", home), Route("/graphql", graphql, methods=["GET", "POST"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    if store is not None:
        app.state.repo = store
    return app
