"""Event-loop responsiveness: `/healthz` latency while a very large write runs on the same server
(a 50,000-instance create; a 30,000-entry import), against the same probe with nothing else
running (the baseline, measured in the same run). The server has one event loop: whatever a
write does on it, every other request waits.

The targets are measured on a fresh server, whose process holds little besides the benchmark
studies, as a server on MongoDB does. The embedded store keeps every study and every version
as Python objects in the process: after scenario E's writes, millions of them, which each of
CPython's full garbage collections walks, holding the loop about half a second, whatever the
request that triggered it. `on_a_filled_store` shows that case, without a target."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from store.interop import demo

if TYPE_CHECKING:
    from bench.__main__ import Bench

CREATE = "mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id } }"
# A dry run: the embedded store's unique indexes make each insert scan the collection, so
# writing 30,000 studies would take it minutes; planning (matching and the write rules for
# every entry) is the part that runs on the event loop, the writes are store calls.
IMPORT = """mutation($b: JSON!) { ImagingStudyImport(resource: $b, dryRun: true) {
  index status } }"""
INTERVAL = 0.01  # a probe every 10 ms
TARGET_MS = 100


def import_bundle(entries: int) -> dict[str, Any]:
    """A transaction Bundle of small new studies (under the 8 MiB body cap at 30,000). None
    has a Study Instance UID or an id, so none needs a store call to be matched: planning
    them is pure computation, the worst case for the loop."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "ImagingStudy",
                    "status": "registered",
                    "subject": {"reference": f"Patient/loop-{n % 100}"},
                    "started": "2024-03-05T10:00:00+01:00",
                    "description": f"Scheduled study {n}",
                }
            }
            for n in range(entries)
        ],
    }


async def _probe(session: httpx.AsyncClient, until: asyncio.Future[Any]) -> list[float]:
    latencies: list[float] = []
    while not until.done():
        start = time.perf_counter()
        await session.get("/healthz")
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(INTERVAL)
    return latencies


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _during(
    probe: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> tuple[list[float], float]:
    """The probe's latencies while `body` is posted, and how long the write took. The write is
    encoded beforehand and posted from a thread of its own: sending 7 MiB and reading the
    answer in the probe's event loop would delay the probe, not the server."""
    content = orjson.dumps(body)

    def post() -> httpx.Response:
        with httpx.Client(base_url=url, timeout=300) as writer:
            return writer.post(
                "/graphql", content=content, headers={"content-type": "application/json"}
            )

    start = time.perf_counter()
    write = asyncio.ensure_future(asyncio.to_thread(post))
    during = await _probe(probe, write)
    took = time.perf_counter() - start
    assert "errors" not in write.result().json(), write.result().text[:300]
    return during, took


def _study() -> dict[str, Any]:
    return {**demo.study("LOOP", 20, 2_500), "id": "LOOP"}  # 50,000 instances, 7 MiB


async def on_a_filled_store(bench: Bench, port: int) -> None:
    """The create on the server scenario E filled: a row without a target."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as probe:
        during, took = await _during(
            probe, f"http://127.0.0.1:{port}", {"query": CREATE, "variables": {"r": _study()}}
        )
    bench.row(
        "L",
        "the same create, embedded store filled by E",
        _p99(during),
        f"p99; max {max(during) * 1000:.0f} ms; the write took {took:.1f} s; full "
        "garbage collections walk the store's objects",
    )


async def responsiveness(bench: Bench, port: int) -> None:
    """Rows for the baseline and the probe during each write; the target: p99 under 100 ms."""
    url = f"http://127.0.0.1:{port}"
    resource = _study()
    bundle = import_bundle(30_000)  # 5 MiB
    async with httpx.AsyncClient(base_url=url, timeout=300) as probe:
        idle: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(2.0, idle.set_result, None)
        baseline = await _probe(probe, idle)
        create, create_took = await _during(
            probe, url, {"query": CREATE, "variables": {"r": resource}}
        )
        imported, import_took = await _during(
            probe, url, {"query": IMPORT, "variables": {"b": bundle}}
        )
    idle_p99 = bench.row(
        "L", "/healthz p99, idle server", _p99(baseline), f"{len(baseline)} probes"
    )
    for what, during, took in (
        ("a 50,000-instance create", create, create_took),
        ("a 30,000-entry import (dry run)", imported, import_took),
    ):
        p99 = bench.row(
            "L",
            f"/healthz p99 during {what}",
            _p99(during),
            f"{len(during)} probes, max {max(during) * 1000:.0f} ms; the write took {took:.1f} s",
        )
        bench.target(
            f"L: /healthz p99 under {TARGET_MS} ms while {what} runs",
            p99 < TARGET_MS,
            f"{p99:.0f} ms (idle: {idle_p99:.1f} ms)",
        )
