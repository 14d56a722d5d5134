"""Event-loop responsiveness: `/healthz` latency while a 50,000-instance create runs on the same
server, against the same probe with nothing else running (the baseline, measured in the same
run). The server has one event loop: whatever a write does on it, every other request waits."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx

from store import demo

if TYPE_CHECKING:
    from bench.__main__ import Bench

CREATE = "mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id } }"
INTERVAL = 0.01  # a probe every 10 ms


async def _probe(session: httpx.AsyncClient, until: asyncio.Future[object]) -> list[float]:
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


async def responsiveness(bench: Bench, port: int) -> None:
    """Rows for the baseline and the probe during the write; the target: p99 under 100 ms."""
    url = f"http://127.0.0.1:{port}"
    resource = {**demo.study("LOOP", 20, 2_500), "id": "LOOP"}  # 50,000 instances, 7 MiB
    async with httpx.AsyncClient(base_url=url, timeout=300) as probe, \
            httpx.AsyncClient(base_url=url, timeout=300) as writer:
        idle: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(2.0, idle.set_result, None)
        baseline = await _probe(probe, idle)
        start = time.perf_counter()
        write = asyncio.ensure_future(writer.post("/graphql", json={
            "query": CREATE, "variables": {"r": resource}}))
        during = await _probe(probe, write)
        took = time.perf_counter() - start
        assert "errors" not in write.result().json(), write.result().text[:300]
    bench.row("L", "/healthz p99, idle server", _p99(baseline), f"{len(baseline)} probes")
    p99 = bench.row("L", "/healthz p99 during a 50,000-instance create", _p99(during),
                    f"{len(during)} probes, max {max(during) * 1000:.0f} ms; the create "
                    f"took {took:.1f} s")
    bench.target("L: /healthz p99 under 100 ms while a 50,000-instance create runs",
                 p99 < 100, f"{p99:.0f} ms (idle: {_p99(baseline):.1f} ms)")
