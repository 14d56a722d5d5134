"""`imaging-api sync-dicomweb` as a user runs it, against a real Orthanc and a real server:
--watch adds what Orthanc receives and SIGTERM ends it with the summary; subscribers of
ImagingStudyChanged hear the synced changes; the credentials come from the settings; bad
options and settings are refused with what to do."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings, SettingsError
from api.transfer.sync import SyncOptions, run_sync
from api.transfer.targets import RemoteTarget
from bench.orthanc import Orthanc
from store.mongo.repository import Repository
from tests.support.orthanc import (
    GENERATED,
    PROXY_PORT,
    generated_study,
    image,
    orthanc,  # noqa: F401 (a fixture)
)
from tests.support.proxy import proxy
from tests.support.server import serving
from tests.support.websocket import init, receive, socket, subscribe

EXE = str(Path(sys.executable).parent / "imaging-api")
NEW_STUDY = "1.2.826.0.1.3680043.9.7433.3"


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without the settings that would point the CLI elsewhere."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "IMAGING_"))}
    return {**keep, **extra}


async def _until(check: Any, what: str) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within 30 s: {what}")


@pytest.mark.slow
async def test_watch_syncs_new_studies_and_sigterm_ends_it_with_the_summary(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address:
        process = await asyncio.create_subprocess_exec(
            EXE,
            "sync-dicomweb",
            orthanc.dicomweb,
            "--watch",
            "0.3",
            "--url",
            f"http://{address}/graphql",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        try:

            async def count(n: int) -> bool:
                return len(await store.search([], 100)) == n

            await _until(lambda: count(4), "the first poll")
            for path in generated_study(tmp_path / "new", NEW_STUDY, (2,)):
                await asyncio.to_thread(orthanc.upload, path)
            await _until(lambda: count(5), "the study added to Orthanc")
            process.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, err.decode()
    summary = out.decode()
    assert "studies created            5" in summary
    assert "instances added           11" in summary
    assert err.decode() == ""  # no log line per HTTP call, no traceback


@pytest.mark.slow
async def test_subscribers_hear_the_synced_changes(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        await subscribe(ws, "1")
        await asyncio.sleep(0.2)  # let the server register the subscriber
        async with httpx.AsyncClient(timeout=60) as http:
            where = RemoteTarget(f"http://{address}/graphql", http)
            status = await run_sync(where, Settings(), orthanc.dicomweb, SyncOptions())
            assert status == 0
            created = [await receive(ws) for _ in range(4)]
            orthanc.upload(image(tmp_path, "x.dcm", GENERATED, f"{GENERATED}.2", 9, Modality="MR"))
            assert await run_sync(where, Settings(), orthanc.dicomweb, SyncOptions()) == 0
            updated = await receive(ws)
    events = [m["payload"]["data"]["ImagingStudyChanged"] for m in created]
    assert {e["action"] for e in events} == {"create"}
    stored = {s["id"]: s for s in await store.search([], 100)}
    assert {e["id"] for e in events} == set(stored)
    change = updated["payload"]["data"]["ImagingStudyChanged"]
    assert change["action"] == "update"
    assert stored[change["id"]]["identifier"][0]["value"] == f"urn:oid:{GENERATED}"
    assert change["versionId"] == stored[change["id"]]["meta"]["versionId"] != "1"


@pytest.mark.slow
async def test_the_bearer_token_of_the_settings_is_sent(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
) -> None:
    from api.transfer.targets import LocalTarget

    settings = Settings(dicomweb_token="pacs-token")
    with proxy(PROXY_PORT, orthanc.url, {}) as seen:
        url = f"http://127.0.0.1:{PROXY_PORT}/dicom-web"
        assert await run_sync(LocalTarget(store), settings, url, SyncOptions()) == 0
    assert set(seen) == {"Bearer pacs-token"}
    assert len(await store.search([], 100)) == 4


def test_basic_auth_comes_from_the_settings() -> None:
    from api.transfer.sync import server

    settings = Settings.from_env(
        {"IMAGING_DICOMWEB_USER": "pacs", "IMAGING_DICOMWEB_PASSWORD": "s3cret"}
    )
    assert server(settings, "http://127.0.0.1:1/dicom-web").client._session.auth == (
        "pacs",
        "s3cret",
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"IMAGING_DICOMWEB_TOKEN": "t", "IMAGING_DICOMWEB_USER": "u"},
            "two ways to authenticate",
        ),
        ({"IMAGING_DICOMWEB_USER": "u"}, "go together"),
        ({"IMAGING_DICOMWEB_PASSWORD": "p"}, "go together"),
    ],
)
def test_ambiguous_dicomweb_credentials_refuse_to_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since must be a date like 2024-01-31"),
        (["--watch", "0"], "--watch must be a number of seconds"),
        (["--timezone", "CET"], "--timezone must look like +01:00"),
        (["--study", "1.2.x"], "is not a DICOM UID"),
    ],
)
def test_bad_options_are_refused_with_what_to_do(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from api.cli import commands as cli

    for name in list(os.environ):
        if name.startswith(("MONGODB_", "IMAGING_")):
            monkeypatch.delenv(name)
    # an unused loopback port: nothing is listed before the options are refused
    code = cli.main(
        [
            "sync-dicomweb",
            "http://127.0.0.1:18199/dicom-web",
            *args,
            "--url",
            "http://127.0.0.1:18199/graphql",
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
