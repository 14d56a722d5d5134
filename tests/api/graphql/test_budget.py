"""Each operation returns at most IMAGING_MAX_RESULT_VALUES values, counted on the studies it
read: aliases of one large study cannot hold the server, and a refused alias is not read."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository

TREE = "series { instance { uid } }"  # per study: 1 + 2 series x (1 + 100 instances x 2)


@pytest.fixture
async def client(store: Repository) -> Any:
    await store.create(demo.study("big", 2, 100))
    store.cache = None  # each alias's read reaches the store, for `reads_of` to count
    app = create_app(Settings(seed=False, max_result_values=1_000, allowed_hosts=("test",)), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        yield http


def reads_of(store: Repository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = store._studies.find_one

    async def spy(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(query.get("_id"))
        return await real(query, *args, **kwargs)

    monkeypatch.setattr(store._studies, "find_one", spy, raising=False)
    return seen


async def test_aliases_of_a_large_study_stop_at_the_budget(
    client: httpx.AsyncClient, store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = reads_of(store, monkeypatch)
    query = "{ " + " ".join(f'a{n}: ImagingStudy(id: "big") {{ {TREE} }}' for n in range(10)) + " }"
    body = (await client.post("/graphql", json={"query": query})).json()
    served = [k for k, v in body["data"].items() if v is not None]
    assert len(served) == 2  # 403 values each: a third would pass 1,000
    assert {e["extensions"]["code"] for e in body["errors"]} == {"QUERY_REJECTED"}
    assert body["errors"][0]["extensions"]["limit"] == 1_000
    assert len(reads) == 3  # the refused ones after the third were never read


async def test_paged_instances_count_as_paged(client: httpx.AsyncClient) -> None:
    query = (
        "{ "
        + " ".join(
            f'a{n}: ImagingStudy(id: "big") {{ series {{ instance(_count: 10) {{ uid }} }} }}'
            for n in range(10)
        )
        + " }"
    )
    body = (await client.post("/graphql", json={"query": query})).json()
    assert "errors" not in body, body  # 10 x (1 + 2 x (1 + 10 x 2)) = 430


async def test_a_worklist_that_reads_no_instances_is_not_counted(client: httpx.AsyncClient) -> None:
    body = (
        await client.post(
            "/graphql",
            json={
                "query": "{ "
                + " ".join(
                    f"a{n}: ImagingStudyList(_count: 20) {{ id status series {{ uid }} }}"
                    for n in range(20)
                )
                + " }"
            },
        )
    ).json()
    assert "errors" not in body


async def test_fhir_json_counts_what_it_returns(client: httpx.AsyncClient) -> None:
    body = (
        await client.post("/graphql", json={"query": '{ ImagingStudy(id: "big") { fhirJson } }'})
    ).json()
    assert body["errors"][0]["extensions"]["code"] == "QUERY_REJECTED"  # 200 x 12 > 1,000


async def test_an_operations_reads_stop_after_its_store_time(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aliases of a slow search (the embedded store scans) ran one store call after another
    for minutes: now the reads of one operation share IMAGING_MAX_STORE_SECONDS."""
    import asyncio

    real = store.count
    calls: list[int] = []

    async def slow(params: Any) -> int:
        calls.append(1)
        await asyncio.sleep(0.3)
        return await real(params)

    monkeypatch.setattr(store, "count", slow)
    app = create_app(Settings(seed=False, max_store_seconds=1, allowed_hosts=("test",)), store)
    query = (
        "{ "
        + " ".join(
            f'a{n}: ImagingStudyConnection(instance: "1.2.{n}") {{ count }}' for n in range(10)
        )
        + " }"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        body = (await http.post("/graphql", json={"query": query})).json()
    # The connection is non-null, so the refusal nulls the whole response; what matters is
    # that after 4 x 0.3 s had passed 1 s, the fifth and later aliases were never read.
    assert len(calls) == 4
    assert {e["extensions"]["code"] for e in body["errors"]} == {"QUERY_REJECTED"}


async def test_fhirpath_is_priced_as_the_whole_studies_it_reads(client: httpx.AsyncClient) -> None:
    """An expression reads every element of every candidate: `{ id }` with fhirpath costs what
    fhirJson does, so the budget bounds the evaluation too."""
    query = '{ ImagingStudyList(_id: "big"%s) { id } }'
    plain = (await client.post("/graphql", json={"query": query % ""})).json()
    assert plain["data"]["ImagingStudyList"] == [{"id": "big"}]
    body = (await client.post("/graphql", json={"query": query % ', fhirpath: "true"'})).json()
    assert body["errors"][0]["extensions"]["code"] == "QUERY_REJECTED"  # 200 x 12 > 1,000


async def test_history_versions_are_priced_whole_as_rebuilt(
    client: httpx.AsyncClient, store: Repository
) -> None:
    """History keeps patches, but each version it returns is rebuilt whole and charged as a
    study read: four versions of 400-odd values pass 1,000, two do not."""
    big = await store.get("big")
    assert big is not None
    series_uid = big["series"][0]["uid"]
    sop = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}
    for n in range(3):
        instance = {"uid": f"1.2.826.0.5.{n}", "number": 1000 + n, "sopClass": sop}
        await store.add_instances("big", series_uid, [instance], None)
    query = '{ ImagingStudyHistory(id: "big"%s) { meta { versionId } %s } }'
    body = (await client.post("/graphql", json={"query": query % ("", TREE)})).json()
    assert {e["extensions"]["code"] for e in body["errors"]} == {"QUERY_REJECTED"}
    body = (await client.post("/graphql", json={"query": query % (", _count: 2", TREE)})).json()
    assert "errors" not in body
    versions = body["data"]["ImagingStudyHistory"]
    assert [v["meta"]["versionId"] for v in versions] == ["4", "3"]
    assert [sum(len(s["instance"]) for s in v["series"]) for v in versions] == [203, 202]
