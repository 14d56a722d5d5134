"""The real JavaScript clients (graphql-ws, Apollo Client, urql) against a running server: the
Node suite in tests/clients (`node --test`, every `*.test.js` there), run once against a server
with bearer-token authentication over a store holding the R5 example studies. A failing Node
test fails this test with Node's report. `make test` installs the suite's packages from its
lockfile (`npm ci`); without `node` this is skipped."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.server import serving
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token

SUITE = Path(__file__).parents[1] / "clients"
NODE = shutil.which("node")
TIMEOUT = 300  # seconds for the whole Node suite: a hung client fails instead of hanging

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NODE is None, reason="needs Node.js (`node`) for the client suite in tests/clients"
    ),
]


async def test_the_javascript_clients(store: Repository) -> None:
    if not (SUITE / "node_modules").is_dir():
        pytest.fail(
            "tests/clients has no node_modules: run `make test` (or `npm ci --prefix "
            "tests/clients`) to install the clients from the lockfile"
        )
    for name in ("ImagingStudy-example.json", "ImagingStudy-example-xr.json"):
        await store.create(demo.example(name))
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    async with serving(create_app(settings, store)) as address:
        process = await asyncio.create_subprocess_exec(
            str(NODE),
            "--test",
            "--test-concurrency=1",
            cwd=SUITE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={
                **os.environ,
                "IMAGING_URL": f"http://{address}",
                "IMAGING_TOKEN": token("system/*.*"),
            },
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            pytest.fail(f"the Node suite did not finish in {TIMEOUT} s:\n{output.decode()}")
    report = output.decode()
    assert process.returncode == 0, f"a Node client test failed:\n{report}"
    assert "# fail 0" in report, report
    assert "# pass 0" not in report, f"no Node test ran:\n{report}"
