"""Fixtures chain settings -> store -> app -> client. The store is the embedded one, or a real
MongoDB (a throw-away database) when MONGODB_URI is set, so the same tests run on both."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.mongo import client
from store.mongo.cache import StudyCache
from store.mongo.repository import Repository
from tests.support.graphql import Gql


@pytest.fixture(autouse=True)
def new_texts_unthrottled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite sends thousands of new query texts in a process (property tests, fuzzing):
    the shared allowance for parsing and validating new texts, which protects a server from
    such floods, would refuse them on a slow machine. Its own tests set it as they need."""
    from api.graphql import documents

    monkeypatch.setattr(documents, "NEW_TEXTS", documents.Allowance(1e9, 1e9))


@pytest.fixture
def settings() -> Settings:
    return Settings(seed=False, allowed_hosts=("test",))  # the clients' base URL, http://test


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Repository]:
    uri = os.environ.get("MONGODB_URI")
    name = f"imaging_test_{uuid.uuid4().hex[:12]}"
    handle, db = client.open_server(uri, name) if uri else client.open_embedded(name)
    repo = Repository(db, max_instances=settings.max_instances, max_series=settings.max_series)
    # The suite runs with the study cache on, auditing every hit: a reader that changed a
    # kept study in place fails the test that did it.
    repo.cache = StudyCache(settings.cache_mb * 2**20, audit=True) if settings.cache_mb else None
    await repo.ensure_indexes()
    yield repo
    assert repo.cache is None or not repo.cache.changed(), "a kept study was changed in place"
    if uri:
        await handle.drop_database(name)
    client.close(handle)


@pytest.fixture
def app(settings: Settings, store: Repository) -> Any:
    return create_app(settings, store)


@pytest.fixture
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def gql(http: httpx.AsyncClient) -> Gql:
    """POSTs one GraphQL operation; returns the decoded response body."""

    async def post(query: str, **variables: Any) -> dict[str, Any]:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        return response.json()

    return post


@pytest.fixture
def untouched(store: Repository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the store calls made (studies and history); a rejected query makes none."""
    calls: list[str] = []
    target = store._studies

    class Spy:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(target, name)

    monkeypatch.setattr(store, "_studies", Spy())
    monkeypatch.setattr(store, "_history", Spy())
    return calls
