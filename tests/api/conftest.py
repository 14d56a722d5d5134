"""Fixtures of the API tests that use bearer tokens: an app with JWT auth over a store holding
study "mine" of patient p1 and study "theirs" of patient p2."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.mongo.repository import Repository
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, study


@pytest.fixture
async def client(store: Repository) -> AsyncIterator[httpx.AsyncClient]:
    for s in (study("mine", "p1"), study("theirs", "p2")):
        await store.create(s)
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    app = create_app(settings, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        yield http
