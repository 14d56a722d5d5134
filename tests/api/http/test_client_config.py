"""What the service gives client developers: the Apollo cache configuration (served at
/apollo-cache.js, printed by `imaging-api apollo-cache`; tests/clients proves it in a real
InMemoryCache) and the GraphiQL page's vendored scripts (tests/e2e/test_browser.py runs it)."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from api.cli.commands import main
from api.graphql.schema import schema
from api.http.apollo_cache import config
from api.http.app import STATIC, create_app
from api.http.graphiql import page
from api.settings import Settings


async def get(settings: Settings, path: str) -> httpx.Response:
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        return await http.get(path)


async def test_the_served_module_is_what_the_cli_prints(capsys: pytest.CaptureFixture[str]) -> None:
    served = await get(Settings(seed=False, allowed_hosts=("test",)), "/apollo-cache.js")
    assert main(["apollo-cache"]) == 0
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/javascript")
    assert served.text == capsys.readouterr().out
    assert "export const typePolicies" in served.text


async def test_production_serves_no_cache_module() -> None:
    # Like introspection and GraphiQL, a description of the schema is for development.
    settings = Settings(
        seed=False, env="production", allowed_hosts=("test",), cursor_secret="x" * 32
    )
    assert (await get(settings, "/apollo-cache.js")).status_code == 404


def test_the_configuration_follows_the_schema() -> None:
    facts = config(schema._schema)
    # Only a resource has an id that names it; a FHIR element's id is unique only inside its
    # resource, and the change event's id is the study's: those are never keyed.
    assert facts["resources"] == ["ImagingStudy"]
    assert {
        "ImagingStudySeries",
        "ImagingStudySeriesInstance",
        "Coding",
        "ImagingStudyChangeEvent",
    } <= set(facts["unkeyed"])
    assert facts["pagedFields"] == {
        "ImagingStudySeries": {"instance": ["fhirpath", "id", "number", "title", "uid"]}
    }
    assert facts["listsByUid"] == {"ImagingStudy": {"series": ["instance"]}}
    objects = {
        name
        for name, t in schema._schema.type_map.items()
        if hasattr(t, "fields")
        and not name.startswith("__")
        and name not in {"Query", "Mutation", "Subscription"}
        and not name.endswith("Input")
    }
    assert set(facts["resources"]) | set(facts["unkeyed"]) == objects


def test_graphiql_scripts_are_vendored_byte_for_byte() -> None:
    html = page()
    assets = re.findall(r'(?:src|href)="/static/vendor/([^"]+)"\s+integrity="([^"]+)"', html)
    assert "graphql-ws@6.4.2/umd/graphql-ws.min.js" in {path for path, _ in assets}
    for path, integrity in assets:
        algorithm, digest = integrity.split("-", 1)
        data = (STATIC / "vendor" / path).read_bytes()
        assert base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == digest, path
    assert "https://unpkg.com" not in html
