"""`pip install .` (not editable) gives a server that serves GraphiQL: the wheel carries the
page's scripts (api/http/static), the R5 definitions and the demo data, not only the modules. The
wheel is built as pip builds it, unpacked, and served from there, away from this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

ROOT = Path(__file__).parents[2]
START_SECONDS = 60  # a bound on start-up on a loaded machine, not a speed expectation

pytestmark = pytest.mark.slow  # builds a wheel and starts a server from it


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, unpacked as pip would install it."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("imaging_api-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_carries_what_the_server_reads(installed: Path) -> None:
    for needed in (
        "api/http/static/vendor/graphiql@3.8.3/graphiql.min.js",
        "api/http/static/vendor/graphql-ws@6.4.2/umd/graphql-ws.min.js",
        "store/fhir/r5",
        "store/interop/demo",
    ):
        assert (installed / needed).exists(), needed


def test_the_installed_server_serves_graphiql(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    env.pop("MONGODB_URI", None)
    where = subprocess.run(
        [sys.executable, "-c", "import api; print(api.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert where.stdout.startswith(str(installed))  # the wheel's code, not this checkout's
    port = free_port()
    log = tmp_path / "stderr"
    with log.open("wb") as err:
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from api.cli.commands import main; main()",
                "serve",
                "--no-seed",
                "--port",
                str(port),
            ],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the installed server did not start"
                time.sleep(0.2)
        page = httpx.get(f"{base}/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert "graphiql" in page.text.lower()
        script = httpx.get(f"{base}/static/vendor/graphiql@3.8.3/graphiql.min.js")
        assert script.status_code == 200
        answer = httpx.post(f"{base}/graphql", json={"query": "{ __typename }"})
        assert answer.json() == {"data": {"__typename": "Query"}}
    finally:
        server.terminate()
        server.wait(30)
