"""The HTTP half of the benchmarks: the real app served by uvicorn in a process of its own, and
clients measuring latency and throughput against it."""

from __future__ import annotations

import asyncio
import gzip
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import orjson
import zstandard

from bench import data
from bench.loop import on_a_filled_store, responsiveness
from bench.scenarios import INSTANCE_ALL, QUERIES

if TYPE_CHECKING:
    from bench.__main__ import Bench


PORTS: list[int] = []  # `--ports`: the servers take these in turn; none: any free port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the next of PORTS, when given)."""
    if PORTS:
        PORTS.append(PORTS.pop(0))
        return PORTS[-1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def http(
    port: int, body: dict[str, Any], clients: int, per_client: int, coding: str = "identity"
) -> tuple[float, float, float]:
    """p50 ms, p99 ms and requests per second of `clients` concurrent clients, asking for
    the response in `coding` (httpx decodes it: its cost is the client's, as in a viewer)."""
    latencies: list[float] = []
    headers = {"accept-encoding": coding}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as session:
        await session.post("/graphql", json=body, headers=headers)

        async def one_client() -> None:
            for _ in range(per_client):
                start = time.perf_counter()
                response = await session.post("/graphql", json=body, headers=headers)
                latencies.append(time.perf_counter() - start)  # the body is in; not parsed
                assert response.headers.get("content-encoding", "identity") == coding
                assert b'"errors"' not in response.content[:200], response.text[:300]

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return (
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        len(latencies) / elapsed,
    )


@asynccontextmanager
async def server(
    worklist: int, outage: str = "", cache_mb: int | None = None
) -> AsyncIterator[int]:
    """The real app in a process of its own, loaded with the benchmark data; yields its port.
    `cache_mb`: the study cache's size (None: the default setting)."""
    port = free_port()
    extra = ["--outage", outage] if outage else []
    extra += [] if cache_mb is None else ["--cache-mb", str(cache_mb)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.server",
        "--port",
        str(port),
        "--worklist",
        str(worklist),
        *extra,
        cwd=Path(__file__).parent.parent,
    )
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(3000):
                try:
                    await probe.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


# What each coding costs on the study response: compressing and decompressing it, and the time
# on a link of this many bits per second (loopback is measured as well, over HTTP).
CODINGS = (("gzip", 1), ("gzip", 6), ("gzip", 9), ("zstd", 1), ("zstd", 3))
LINKS = (("1 Gbit/s", 1e9), ("100 Mbit/s", 1e8))


def _codec(coding: str, level: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    if coding == "zstd":
        return (
            zstandard.ZstdCompressor(level=level).compress,
            zstandard.ZstdDecompressor().decompress,
        )
    return (lambda b: gzip.compress(b, level, mtime=0)), gzip.decompress


def _median_ms(run: Callable[[bytes], bytes], data: bytes, repeat: int = 9) -> float:
    """CPU time, not wall time: one thread's work, which a busy machine would only delay."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run(data)
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


async def compression(bench: Bench, port: int, body: dict[str, Any]) -> None:
    """The rows that chose api/http/compression.py's codings and levels: each coding's cost
    on the study response, what it saves on a LAN, and A over loopback in each coding."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as session:
        plain = (
            await session.post("/graphql", json=body, headers={"accept-encoding": "identity"})
        ).content
    wire = {name: len(plain) * 8 / bps * 1000 for name, bps in LINKS}
    for coding, level in CODINGS:
        pack, unpack = _codec(coding, level)
        packed = pack(plain)
        cost = _median_ms(pack, plain) + _median_ms(unpack, packed)
        on = ", ".join(
            f"{name} {cost + len(packed) * 8 / bps * 1000:.1f} (identity {wire[name]:.1f})"
            for name, bps in LINKS
        )
        bench.row(
            "A",
            f"{coding} {level}: compress + decompress",
            cost,
            f"{len(packed)} of {len(plain)} bytes; ms with the transfer: {on}",
        )
    for coding in ("gzip", "zstd"):
        single, _, _ = await http(port, body, 1, 20, coding)
        bench.row("A", f"HTTP, 1 client, {coding}: p50", single, "on loopback")


ADD = """mutation($id: ID!, $u: String!, $i: [ImagingStudySeriesInstanceInput!]!) {
  ImagingStudyAddInstances(id: $id, seriesUid: $u, instances: $i) { meta { versionId } } }"""
CREATE = "mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id } }"


async def create_copy(session: httpx.AsyncClient, base: dict[str, Any], study_id: str) -> None:
    """Creates a copy of study `base` as `study_id` (its identifier made unique with it)."""
    copy = {**base, "id": study_id, "identifier": [{"system": "urn:x", "value": study_id}]}
    created = await session.post("/graphql", json={"query": CREATE, "variables": {"r": copy}})
    assert "errors" not in created.json(), created.text[:300]


async def writes(bench: Bench, port: int, clients: int, per_client: int) -> None:
    """E over HTTP: each client adds batches of 1,000 new instances to a study of its own
    that starts at 5,000, so clients do not contend for one document."""
    latencies: list[float] = []
    base = data.study("E", 1, 5_000)
    series_uid = base["series"][0]["uid"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as session:

        async def one_client(n: int) -> None:
            study_id = f"E-http-{n}"
            await create_copy(session, base, study_id)
            for batch in range(per_client):
                instances = [
                    {
                        "uid": f"1.2.826.0.8.{n}.{batch}.{k}",
                        "number": k,
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    }
                    for k in range(1, 1001)
                ]
                body = {
                    "query": ADD,
                    "variables": {"id": study_id, "u": series_uid, "i": instances},
                }
                start = time.perf_counter()
                response = await session.post("/graphql", json=body)
                latencies.append(time.perf_counter() - start)
                assert b'"errors"' not in response.content[:200], response.text[:300]

        start = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    bench.row(
        "E",
        f"HTTP, {clients} clients: p50",
        latencies[len(latencies) // 2] * 1000,
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
        f"{len(latencies) / elapsed:.1f} batches/s of 1,000 instances",
    )


async def add_to_empty(bench: Bench, port: int, runs: int = 15) -> None:
    """F: 1,000 instances added by one ImagingStudyAddInstances to a study with none, over HTTP
    (one client, a fresh study each time), against an orjson round trip of the same body (the
    limit: what decoding and encoding the request's JSON costs at best), timed alternately."""
    base = data.study("F", 1, 0)
    series_uid = base["series"][0]["uid"]
    ours, limit = [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as session:
        for run in range(runs + 2):  # the first two warm up
            study_id = f"F-{run}"
            await create_copy(session, base, study_id)
            instances = [
                {
                    "uid": f"1.2.826.0.6.{run}.{k}",
                    "number": k,
                    "sopClass": {
                        "system": "urn:ietf:rfc:3986",
                        "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                    },
                }
                for k in range(1, 1001)
            ]
            content = orjson.dumps(
                {"query": ADD, "variables": {"id": study_id, "u": series_uid, "i": instances}}
            )
            start = time.perf_counter()
            response = await session.post(
                "/graphql", content=content, headers={"content-type": "application/json"}
            )
            elapsed = time.perf_counter() - start
            assert b'"errors"' not in response.content[:200], response.text[:300]
            start = time.perf_counter()
            orjson.dumps(orjson.loads(content))
            if run >= 2:
                limit.append(time.perf_counter() - start)
                ours.append(elapsed)
    ms, lim = statistics.median(ours) * 1000, statistics.median(limit) * 1000
    bench.row("F", "limit: orjson round trip of the body", lim, f"{len(content)} bytes")
    bench.row(
        "F",
        "HTTP, 1 client: AddInstances of 1,000",
        ms,
        f"into a study with none; min {min(ours) * 1000:.1f} ms (a busy machine weighs on the "
        "server, not on the round trip)",
    )
    bench.target(
        "F: 1,000-instance AddInstances into an empty study, over HTTP, within 60x an orjson "
        "round trip of its body",
        ms <= 60 * lim,
        f"{ms / lim:.0f}x ({ms:.1f} ms / {lim:.2f} ms)",
    )


PAGE = f"""{{ ImagingStudy(id: "P") {{ series {{ uid instance(_count: 100, _offset: 2000) {{
  {INSTANCE_ALL} }} }} }} }}"""
WHOLE = f"""{{ ImagingStudy(id: "P") {{ series {{ uid instance {{ {INSTANCE_ALL} }} }} }} }}"""


async def lean(port: int, body: dict[str, Any], requests: int) -> float:
    """p50 ms of `requests` requests in turn over one aiohttp connection: a client whose own
    cost per request (its HTTP parser is in C) is a fraction of httpx's, which on the
    benchmark machine spends about 1 ms of CPU on each, more than the server spends on a
    small query. For rows about the server's fixed cost per request."""
    data = orjson.dumps(body)
    headers = {"content-type": "application/json", "accept-encoding": "identity"}
    latencies: list[float] = []
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for round_ in range(requests + 1):
            start = time.perf_counter()
            async with session.post("/graphql", data=data, headers=headers) as response:
                content = await response.read()
            if round_:  # the first one opens the connection
                latencies.append(time.perf_counter() - start)
            assert response.status == 200, content[:300]
            assert b'"errors"' not in content[:200], content[:300]
    return statistics.median(latencies) * 1000


async def page_cost(bench: Bench, port: int, what: str) -> float:
    """P: a 100-instance page at offset 2,000 of a one-series 10,000-instance study against
    the whole study, one client: what a viewer paging through the study waits for. Measured
    with a lean client (aiohttp; the ratio returned), and with httpx as the other rows are:
    its own cost per request, about 0.6 ms more than aiohttp's here, is part of what it
    measures, and a large part of a page's time."""
    page = await lean(port, {"query": PAGE}, 30)
    whole = await lean(port, {"query": WHOLE}, 15)
    bench.row("P", f"HTTP, 1 client (aiohttp): page of 100, {what}", page)
    bench.row(
        "P",
        f"HTTP, 1 client (aiohttp): whole study, {what}",
        whole,
        f"page / whole {page / whole:.2f}",
    )
    page_x, _, _ = await http(port, {"query": PAGE}, 1, 30)
    whole_x, _, _ = await http(port, {"query": WHOLE}, 1, 15)
    bench.row("P", f"HTTP, 1 client (httpx): page of 100, {what}", page_x)
    bench.row(
        "P",
        f"HTTP, 1 client (httpx): whole study, {what}",
        whole_x,
        f"page / whole {page_x / whole_x:.2f}",
    )
    return page / whole


async def over_http(bench: Bench, worklist: int, requests: int) -> None:
    bodies = {
        "A": {"query": QUERIES["A"], "variables": {"id": "A"}},
        "B": {"query": QUERIES["B"], "variables": {"id": "A"}},
        "D": {"query": QUERIES["D"], "variables": {"id": "D"}},
        "C": {"query": QUERIES["C"], "variables": {"m": ["CT"], "d": ["ge2020-01-01"]}},
    }
    # The study scenarios on a server holding just their studies (as measured in process);
    # the worklist on one holding the 5,000 worklist studies too.
    throughput: dict[str, float] = {}
    for scenarios, load in (("ABD", 0), ("C", worklist)):
        async with server(load) as port:
            for scenario in scenarios:
                p50, p99, rps = await http(port, bodies[scenario], 16, max(requests // 16, 1))
                throughput[scenario] = rps
                bench.row(
                    scenario,
                    "HTTP, 16 clients: p50",
                    p50,
                    f"p99 {p99:.1f} ms, {rps:.0f} requests/s",
                )
            if "A" in scenarios:
                single, _, _ = await http(port, bodies["A"], 1, 20)
                bench.row("A", "HTTP, 1 client: p50", single, "identity, as on loopback")
                ratio = await page_cost(bench, port, "cached")
                bench.target(
                    "P: a 100-instance page at most 0.2x the whole 10,000-instance study",
                    ratio <= 0.2,
                    f"{ratio:.2f}x over HTTP (aiohttp; httpx in the rows)",
                )
                await compression(bench, port, bodies["A"])
                await writes(bench, port, 16, max(requests // 16, 1))
                await on_a_filled_store(bench, port)
    # P again with the study cache off: the cost the cache takes away (the embedded store
    # copies the whole study for every read).
    async with server(0, cache_mb=0) as port:
        await page_cost(bench, port, "cache off")
    # Row L on a server of its own: scenario E leaves millions of Python objects in the
    # embedded store, which every full garbage collection walks (see bench/loop.py).
    async with server(0) as port:
        await responsiveness(bench, port)
    async with server(0) as port:  # F on a server of its own too, for the same reason
        await add_to_empty(bench, port)
    rows = {(s, w): ms for s, w, ms, _ in bench.rows}
    read, encode = rows[("A", "store read")], rows[("A", "limit: orjson.dumps")]
    single = rows[("A", "HTTP, 1 client: p50")]
    # Issue 15 measured 17-29 (A) and 4-8 (C) requests/s on this machine: 3x and 2x its best.
    for scenario, today, factor in (("A", 29, 3), ("C", 8, 2)):
        rps = throughput[scenario]
        bench.target(
            f"{scenario} over HTTP, 16 clients: at least {factor}x issue 15's {today} requests/s",
            rps >= factor * today,
            f"{rps:.1f} requests/s, {rps / today:.1f}x",
        )
    # Issue 15's target for a hot study (the study cache makes the read a version probe, so
    # the former "2x (read + encode) on top of the read" would now price the read at ~0).
    bench.target(
        "A over HTTP, 1 client, hot study: at most 20x orjson.dumps",
        single <= 20 * encode,
        f"{single / encode:.1f}x ({single:.1f} ms, of which the read {read:.1f} ms)",
    )
