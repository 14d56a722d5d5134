"""The endpoints the sync adds to an already indexed study, through a running server
(RemoteTarget over GraphQL): the whole study is updated under the version read, nothing else
changes, a write in between makes it read again, and a second sync writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom.data
import pytest

from api.http.app import create_app
from api.settings import Settings
from api.transfer.sync import SyncOptions, run_sync
from api.transfer.targets import UPDATE, RemoteTarget
from bench.orthanc import Orthanc
from store.interop import demo
from store.interop.dicomweb import endpoint_reference
from store.interop.ingest import Ingest
from store.mongo.repository import Repository
from tests.support.orthanc import (
    TEST_FILES,
    orthanc,  # noqa: F401 (a fixture)
)
from tests.support.server import serving

WADO = endpoint_reference("http://pacs.example/dicom-web")
OTHER = endpoint_reference("http://other-pacs.example/dicom-web")


@pytest.fixture
def remote(http: httpx.AsyncClient) -> RemoteTarget:
    return RemoteTarget("http://test/graphql", client=http)


async def test_only_adds_and_keeps_every_other_element(
    remote: RemoteTarget, store: Repository
) -> None:
    created, _ = await store.create({**demo.study("s1", 2, 3), "endpoint": [OTHER]})
    [first, second] = [s["uid"] for s in created["series"]]
    answer = await remote.add_endpoints("s1", [WADO], {first: [WADO]}, None)
    assert [e["identifier"]["value"] for e in answer["endpoint"]] == [
        OTHER["identifier"]["value"],
        WADO["identifier"]["value"],
    ]
    stored = await store.get("s1")
    assert stored is not None
    assert stored["meta"]["versionId"] == "2"
    assert stored["endpoint"] == [OTHER, WADO]  # the other PACS's stays, first
    assert stored["series"][0]["endpoint"] == [WADO]
    assert "endpoint" not in stored["series"][1]
    strip = ("meta", "endpoint", "series")
    assert {k: v for k, v in stored.items() if k not in strip} == {
        k: v for k, v in created.items() if k not in strip
    }
    assert [{k: v for k, v in s.items() if k != "endpoint"} for s in stored["series"]] == (
        created["series"]
    )
    # Asked again, it writes nothing: the version stays.
    await remote.add_endpoints("s1", [WADO], {first: [WADO], second: []}, None)
    again = await store.get("s1")
    assert again is not None
    assert again["meta"]["versionId"] == "2"


async def test_a_write_in_between_makes_it_read_again(
    remote: RemoteTarget, store: Repository
) -> None:
    await store.create(demo.study("s2", 1, 1))
    call = remote.call
    raced: list[str] = []

    async def racing(query: str, **variables: Any) -> dict[str, Any]:
        if query == UPDATE and not raced:  # another writer gets in first, once
            raced.append(variables["v"])
            await store.set_status("s2", "cancelled", None)
        return await call(query, **variables)

    remote.call = racing  # type: ignore[method-assign]
    await remote.add_endpoints("s2", [WADO], {}, None)
    stored = await store.get("s2")
    assert stored is not None
    assert raced == ["1"]  # the first update was sent under version 1 and lost
    assert stored["status"] == "cancelled"  # the other write stands
    assert stored["endpoint"] == [WADO]
    assert stored["meta"]["versionId"] == "3"


@pytest.mark.slow
async def test_the_sync_through_a_server_gives_an_ingested_study_its_endpoints(
    orthanc: Orthanc,  # noqa: F811
    store: Repository,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = [Path(pydicom.data.get_testdata_file(n)) for n in TEST_FILES]
    await Ingest(store).run([*paths, tmp_path / "generated"])
    before = {s["id"]: s["meta"]["versionId"] for s in await store.search([], 100)}
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(timeout=60) as http:
        where = RemoteTarget(f"http://{address}/graphql", http)
        assert await run_sync(where, Settings(), orthanc.dicomweb, SyncOptions()) == 0
        first = capsys.readouterr().out
        synced = {s["id"]: s for s in await store.search([], 100)}
        assert await run_sync(where, Settings(), orthanc.dicomweb, SyncOptions()) == 0
        second = capsys.readouterr().out
    wado = endpoint_reference(orthanc.dicomweb)
    assert synced.keys() == before.keys()
    assert len(synced) == 4
    for study_id, study in synced.items():
        assert study["endpoint"] == [wado]
        assert all(series["endpoint"] == [wado] for series in study["series"])
        assert int(study["meta"]["versionId"]) == int(before[study_id]) + 1
    assert f"studies updated     {4:>8}" in first
    assert f"studies updated     {0:>8}" in second
    assert {s["id"]: s for s in await store.search([], 100)} == synced  # no new version
