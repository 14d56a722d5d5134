"""S: the embedded store grown to 1,000, 10,000 and 50,000 studies, and what the worklist (C: a
50-study page of a search) and opening the 10,000-instance study (A) cost at each size, through
the whole GraphQL layer in process.

A worklist is measured again just after a write (a new study), which the embedded store's
search-key index is rebuilt after.

The small studies (one series of two instances, over 97 patients, five modalities and six
years) are made as stored documents and inserted in one batch before the indexes exist: the
embedded store checks a unique index by scanning the collection, so inserting 50,000 studies
one by one through the write path would take it hours. Each size is a fresh store."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from api.settings import Settings
from bench import data
from bench.scenarios import QUERIES
from store.interop import demo
from store.mongo import client, indexes
from store.mongo.repository import Repository

if TYPE_CHECKING:
    from bench.__main__ import Bench

MODALITIES = ["CT", "MR", "US", "DX", "NM"]


def small(n: int) -> dict[str, Any]:
    """The stored document of small study `n` (what the write path would store)."""
    study_id = f"s{n:06d}"
    resource = demo.study(
        study_id,
        1,
        2,
        patient=f"p{n % 97}",
        started=f"{2019 + n % 6}-{1 + n % 12:02d}-{1 + n % 28:02d}T08:00:00Z",
        modality=MODALITIES[n % 5],
    )
    return Repository._document(resource, study_id, 1)


async def filled(size: int, cache: bool) -> Repository:
    """A fresh embedded store of `size` small studies and study A (10,000 instances)."""
    _, db = client.open_embedded(f"scale{size}")
    await db[indexes.STUDIES].insert_many([small(n) for n in range(size)])
    repo = Repository(db, cache_bytes=Settings().cache_mb * 2**20 if cache else 0)
    await repo.ensure_indexes()
    await repo.create(data.study("A", 20, 500))
    return repo


async def timed(run: Any, repeat: int) -> float:
    await run()  # warm: parsed documents, compiled plans, the cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def scale(bench: Bench, sizes: list[int], repeat: int = 3) -> None:
    for size in sizes:
        await at_size(bench, size, repeat)


async def at_size(bench: Bench, size: int, repeat: int) -> None:
    start = time.perf_counter()
    repo = await filled(size, cache=True)
    loaded = time.perf_counter() - start
    uncached = Repository(repo._db)  # the same store, the study cache off
    worklist = {"m": ["CT"], "d": ["ge2020-01-01"]}

    async def c() -> Any:
        return await bench.ours.run(QUERIES["C"], worklist, repo)

    async def a(store: Repository) -> Any:
        return await bench.ours.run(QUERIES["A"], {"id": "A"}, store)

    writes = iter(range(10**6))

    async def c_after_a_write() -> Any:
        # The embedded store rebuilds its search-key index after any write (store/mongo/
        # keyindex.py): what a worklist costs while studies keep arriving.
        await repo.create(demo.study(f"w{next(writes)}", 1, 1))
        start = time.perf_counter()
        await c()
        return time.perf_counter() - start

    label = f"{size:,} studies"
    bench.row("S", f"C worklist (50 of a search), {label}", await timed(c, repeat))
    after = sorted([await c_after_a_write() for _ in range(repeat)])
    bench.row("S", f"C worklist just after a write, {label}", after[len(after) // 2] * 1000)
    bench.row("S", f"A open study, hot, {label}", await timed(lambda: a(repo), repeat))
    bench.row(
        "S",
        f"A open study, cache off, {label}",
        await timed(lambda: a(uncached), repeat),
        f"store filled in {loaded:.1f} s",
    )
