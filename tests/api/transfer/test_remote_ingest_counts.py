"""Overlapping `ingest-dicom` runs against one server: each study is created by exactly one
of them, so the summaries add up to what was stored (no study or instance counted twice)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from api.transfer.targets import RemoteTarget
from store.interop import demo
from store.interop.ingest import Ingest
from store.mongo.repository import Repository
from tests.support.dicom import write

UID = "1.2.3"  # the Study Instance UID tests.support.dicom writes by default


@pytest.fixture
def remote(http: httpx.AsyncClient) -> RemoteTarget:
    return RemoteTarget("http://test/graphql", client=http)


@pytest.mark.parametrize("taken", [False, True])
async def test_overlapping_remote_ingests_count_each_study_and_instance_once(
    remote: RemoteTarget, store: Repository, tmp_path: Path, taken: bool
) -> None:
    if taken:  # the id the study asks for is another study's: the server picks one
        await store.create(demo.study(UID, 1, 1))
    for n in range(5):
        write(tmp_path, f"{n}.dcm", SOPInstanceUID=f"1.2.3.1.{n + 1}")
    reports = await asyncio.gather(*(Ingest(remote).run([tmp_path]) for _ in range(4)))
    assert [r.failed for r in reports] == [[]] * 4
    assert sum(r.studies_created for r in reports) == 1
    assert sum(r.instances_added for r in reports) == 5
    assert sum(r.instances_duplicate for r in reports) == 15
    found = await store.search([("identifier", f"urn:dicom:uid|urn:oid:{UID}")], 10)
    [study] = found
    assert study["numberOfInstances"] == 5
    assert (study["id"] == UID) is not taken
