"""`make load`: a bounded load run against the app served by uvicorn on 127.0.0.1. N viewer
sessions for a fixed time mix 70% worklist, 25% open study (hundreds of instances) and 5%
writes; every GraphQL error counts as a failure. A second run makes the store unavailable for
10 seconds in the middle: every failure must be STORE_UNAVAILABLE within the outage (plus 5 s),
none after, and no write acknowledged before the outage may be lost. Results go to standard
output and, with --record, to RELIABILITY.md's load section."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

import httpx

from bench.http import server
from bench.scenarios import QUERIES

WORKLIST = {"query": QUERIES["C"], "variables": {"m": ["CT"], "d": ["ge2020-01-01"]}}
OPEN = {"query": QUERIES["B"], "variables": {"id": "w00000"}}
CREATE = """mutation($r: ImagingStudyInput!) { ImagingStudyCreate(res: $r) { id } }"""


class Run:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.failures: list[tuple[float, str, str]] = []  # (time, operation, code)
        self.acknowledged: list[tuple[float, str]] = []  # (time, study id)
        self.started = time.monotonic()

    def report(self, seconds: float) -> str:
        total = sum(len(v) for v in self.latency.values())
        lines = [
            f"{total} requests in {seconds:.0f} s: {total / seconds:.0f} requests/s, "
            f"{len(self.failures)} failures ({len(self.failures) / max(total, 1):.2%})"
        ]
        for operation, times in sorted(self.latency.items()):
            times.sort()
            lines.append(
                f"  {operation:<10} {len(times):>6} requests  p50 "
                f"{statistics.median(times) * 1000:7.1f} ms  p99 "
                f"{times[int(len(times) * 0.99)] * 1000:7.1f} ms"
            )
        codes = Counter(code for _, _, code in self.failures)
        if codes:
            lines.append(f"  failures by code: {dict(codes)}")
        return "\n".join(lines)


def study(n: int) -> dict[str, Any]:
    return {
        "status": "registered",
        "subject": {"reference": f"Patient/load{n % 50}"},
        "identifier": [{"system": "urn:load", "value": f"L{n}"}],
        "series": [{"uid": f"1.2.826.0.7.{n}", "modality": {"coding": [{"code": "CT"}]}}],
    }


async def session(http: httpx.AsyncClient, run: Run, until: float, seed: int) -> None:
    rng = random.Random(seed)
    counter = 0
    while time.monotonic() < until:
        pick = rng.random()
        if pick < 0.70:
            operation, body = "worklist", WORKLIST
        elif pick < 0.95:
            operation, body = "open", {**OPEN, "variables": {"id": f"w{rng.randrange(50):05d}"}}
        else:
            counter += 1
            operation = "write"
            body = {"query": CREATE, "variables": {"r": study(seed * 10**6 + counter)}}
        start = time.monotonic()
        try:
            response = await http.post("/graphql", json=body)
            answer = response.json()
            code = answer["errors"][0]["extensions"]["code"] if answer.get("errors") else None
        except (httpx.HTTPError, ValueError) as error:
            code = f"transport: {type(error).__name__}"
        run.latency[operation].append(time.monotonic() - start)
        if code is not None:
            run.failures.append((start - run.started, operation, code))
        elif operation == "write":
            run.acknowledged.append(
                (start - run.started, answer["data"]["ImagingStudyCreate"]["id"])
            )


async def load(sessions: int, seconds: float, outage: tuple[float, float] | None) -> Run:
    async with server(500, ",".join(map(str, outage)) if outage else "") as port:
        # The outage clock starts with the server; the run starts once it answers.
        run = Run()
        limits = httpx.Limits(max_connections=sessions + 5)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
        ) as http:
            until = time.monotonic() + seconds
            await asyncio.gather(*(session(http, run, until, n) for n in range(sessions)))
            lost = []
            for _, study_id in run.acknowledged:
                found = (
                    await http.post(
                        "/graphql",
                        json={
                            "query": "query($i: ID!) { ImagingStudy(id: $i) { id } }",
                            "variables": {"i": study_id},
                        },
                    )
                ).json()
                if not (found.get("data") or {}).get("ImagingStudy"):
                    lost.append(study_id)
        run.lost = lost  # type: ignore[attr-defined]
    return run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    ok = True
    print(f"steady run: {args.sessions} sessions, {args.seconds:.0f} s")
    steady = asyncio.run(load(args.sessions, args.seconds, None))
    print(steady.report(args.seconds))
    print(f"  acknowledged writes lost: {len(steady.lost)}")  # type: ignore[attr-defined]
    ok &= not steady.failures and not steady.lost  # type: ignore[attr-defined]
    start = args.seconds / 2 - 5
    print(f"\noutage run: the store unavailable from {start:.0f} s to {start + 10:.0f} s")
    faulty = asyncio.run(load(args.sessions, args.seconds, (start, 10.0)))
    print(faulty.report(args.seconds))
    window = (start - 1, start + 10 + 5)  # the clocks of the two processes start ~together
    outside = [f for f in faulty.failures if not window[0] <= f[0] <= window[1]]
    wrong = [f for f in faulty.failures if f[2] != "STORE_UNAVAILABLE"]
    lost = faulty.lost  # type: ignore[attr-defined]
    print(
        f"  failures outside the outage (+5 s): {len(outside)}; not STORE_UNAVAILABLE: "
        f"{len(wrong)}; acknowledged writes lost: {len(lost)}"
    )
    if faulty.failures:
        print(f"  last failure at {max(f[0] for f in faulty.failures):.1f} s")
    ok &= not outside and not wrong and not lost
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
