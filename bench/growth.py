"""Writes whose cost follows the change: a study built one instance per write (how a PACS
sends a CT) and 1,000 instances added to a large study against an empty one, in process on
the embedded store. History is measured in bytes per byte of the final study."""

from __future__ import annotations

import gc
import statistics
import time
from typing import TYPE_CHECKING, Any

import orjson

from bench import data
from store.mongo import client
from store.mongo.repository import Repository

if TYPE_CHECKING:
    from bench.__main__ import Bench

SOP = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}


def instance(n: int) -> dict[str, Any]:
    return {"uid": f"1.2.826.0.9.{n}", "number": n, "sopClass": SOP, "title": f"Image {n}"}


async def grown(bench: Bench, size: int = 5_000) -> None:
    """A study grown to `size` instances one instance per write: the time per addition from
    the first to the last thousand, and the history kept per byte of the final study."""
    _, db = client.open_embedded("bench-growth")
    repo = Repository(db)
    await repo.ensure_indexes()
    study, _ = await repo.create(data.study("G", 1, 1))
    series_uid = study["series"][0]["uid"]
    times: list[float] = []
    for n in range(2, size + 1):
        start = time.perf_counter()
        await repo.add_instances("G", series_uid, [instance(n)], None)
        times.append(time.perf_counter() - start)
    first = statistics.median(times[:1000]) * 1000
    last = statistics.median(times[-1000:]) * 1000
    bench.row("G", "one instance per write, first thousand", first, f"to a {size:,}-instance study")
    bench.row("G", "one instance per write, last thousand", last)
    bench.target(
        "G: time per addition flat within 2x (last / first thousand)",
        last <= 2 * first,
        f"{last / first:.2f}x",
    )
    final = await repo.get("G")
    assert final is not None
    assert final["numberOfInstances"] == size
    kept = await db["imaging_study_history"].find({"_srv.study": "G"}).to_list(None)
    history = sum(len(orjson.dumps(entry, default=str)) for entry in kept)
    ratio = history / len(orjson.dumps(final))
    bench.target(
        "G: history bytes per final-document byte under 3",
        ratio < 3,
        f"{ratio:.2f} ({len(kept):,} versions, {history / 2**20:.1f} MiB of history for a "
        f"{len(orjson.dumps(final)) / 2**20:.2f} MiB study)",
    )
    # The same, alternated with additions to a small study, so load on the machine (a ratio
    # of medians taken minutes apart is at its mercy) weighs on both.
    small, _ = await repo.create(data.study("g", 1, 1))
    large_ms, small_ms = [], []
    for n in range(size + 1, size + 301):
        for study_id, uid, into in (
            ("G", series_uid, large_ms),
            ("g", small["series"][0]["uid"], small_ms),
        ):
            start = time.perf_counter()
            await repo.add_instances(study_id, uid, [instance(n)], None)
            into.append(time.perf_counter() - start)
    alternated = statistics.median(large_ms) / statistics.median(small_ms)
    bench.target(
        f"G: one addition to the {size:,}-instance study / to a small one, alternated, within 2x",
        alternated <= 2,
        f"{alternated:.2f}x",
    )
    versions = await repo.history("G", 400)
    assert versions[0]["numberOfInstances"] == size + 300
    versions = versions[300:]
    assert [len(v["series"][0]["instance"]) for v in versions] == list(range(size, size - 100, -1))


async def into_large_and_empty(bench: Bench, repo: Repository) -> None:
    """The issue-15 row: 1,000 instances added to a 5,000-instance study against an empty
    one (store alone; a fresh copy of the study for every run)."""
    copies = iter(range(10**6))
    batches = iter(range(1, 10**6))

    async def add(instances: int) -> float:
        base = data.study("E", 1, instances)
        study_id = f"E{instances}-{next(copies)}"
        await repo.create(
            {**base, "id": study_id, "identifier": [{"system": "urn:x", "value": study_id}]}
        )
        start = next(batches) * 1000 + 10_000
        batch = [instance(start + n) for n in range(1000)]
        # Creating the large study leaves the collector a debt that would fall on whichever
        # operation came next; it is paid here, outside the measure, for both studies alike.
        gc.collect()
        began = time.perf_counter()
        await repo.add_instances(study_id, base["series"][0]["uid"], batch, None)
        return (time.perf_counter() - began) * 1000

    large, empty = [], []
    for _ in range(7):  # alternated, so a busy moment of the machine weighs on both
        large.append(await add(5_000))
        empty.append(await add(0))
    into_large = bench.row("E", "store alone: 1,000 into 5,000 instances", statistics.median(large))
    into_empty = bench.row("E", "store alone: 1,000 into an empty study", statistics.median(empty))
    bench.target(
        "E: 1,000 instances into a 5,000-instance study / into an empty one, at most 1.5x",
        into_large <= 1.5 * into_empty,
        f"{into_large / into_empty:.2f}x",
    )
