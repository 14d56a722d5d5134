"""Concurrency over real HTTP: the app served by uvicorn on 127.0.0.1, many clients at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE
from tests.support.server import serving

ADD = """mutation($id: ID!, $s: String!, $i: [ImagingStudySeriesInstanceInput!]!, $v: String) {
  ImagingStudyAddInstances(id: $id, seriesUid: $s, instances: $i, versionId: $v) {
  meta { versionId } } }"""
READ = """query($id: ID!) { ImagingStudy(id: $id) { numberOfInstances
  series { numberOfInstances instance { uid } } } }"""


@pytest.fixture
async def http(store: Repository) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(seed=False), store)
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
    async with (
        serving(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=60, limits=limits) as client,
    ):
        yield client


async def post(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200
    return response.json()


@pytest.mark.slow
async def test_200_concurrent_instance_adds_leave_200(http: httpx.AsyncClient) -> None:
    await post(http, CREATE, res=demo.study("c", 1, 0))
    series = demo.uid("c", 1)
    bodies = await asyncio.gather(
        *(post(http, ADD, id="c", s=series, i=[demo.instance("c", 1, n)]) for n in range(1, 201))
    )
    assert [b for b in bodies if "errors" in b] == []
    study = (await post(http, READ, id="c"))["data"]["ImagingStudy"]
    assert len(study["series"][0]["instance"]) == 200
    assert study["numberOfInstances"] == 200


async def test_50_writers_on_one_version_leave_one_winner(http: httpx.AsyncClient) -> None:
    await post(http, CREATE, res=demo.study("v", 1, 0))
    bodies = await asyncio.gather(
        *(
            post(http, ADD, id="v", s=demo.uid("v", 1), v="1", i=[demo.instance("v", 1, n)])
            for n in range(1, 51)
        )
    )
    codes = [b["errors"][0]["extensions"]["code"] for b in bodies if "errors" in b]
    assert codes == ["VERSION_CONFLICT"] * 49
    study = (await post(http, READ, id="v"))["data"]["ImagingStudy"]
    assert study["numberOfInstances"] == 1


async def test_concurrent_conditional_creates_leave_one_study(http: httpx.AsyncClient) -> None:
    condition = f"identifier=urn:dicom:uid|urn:oid:{demo.uid('one')}"
    bodies = await asyncio.gather(
        *(
            post(http, CREATE, ine=condition, res={**demo.study("one", 1, 1), "id": f"one-{n}"})
            for n in range(50)
        )
    )
    assert len({b["data"]["ImagingStudyCreate"]["id"] for b in bodies}) == 1
    listed = await post(
        http,
        "query($i: [String!]) { ImagingStudyConnection(identifier: $i) { count } }",
        i=[f"urn:oid:{demo.uid('one')}"],
    )
    assert listed["data"]["ImagingStudyConnection"]["count"] == 1


@pytest.mark.slow
async def test_readers_never_see_a_torn_study(http: httpx.AsyncClient) -> None:
    await post(http, CREATE, res=demo.study("t", 2, 0))
    writes = [
        post(http, ADD, id="t", s=demo.uid("t", 1 + n % 2), i=[demo.instance("t", 1 + n % 2, n)])
        for n in range(1, 101)
    ]

    async def reader() -> list[dict[str, Any]]:
        seen = []
        for _ in range(30):
            seen.append((await post(http, READ, id="t"))["data"]["ImagingStudy"])
        return seen

    results = await asyncio.gather(*writes, *(reader() for _ in range(5)))
    for snapshots in results[100:]:
        for study in snapshots:
            listed = [len(s.get("instance") or ()) for s in study["series"]]
            assert study["numberOfInstances"] == sum(listed)
            assert [s["numberOfInstances"] for s in study["series"]] == listed
