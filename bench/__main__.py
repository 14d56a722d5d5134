"""Open-study benchmark: schema execution of a viewer query over a 20 x 500 study, against the
cost of encoding the same response with the standard json module, measured in the same run."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from api.context import Context
from api.schema import schema
from api.settings import Settings
from store import client, demo
from store.repository import Repository

VIEWER = """query($id: ID!) { ImagingStudy(id: $id) { id status series { uid number
  modality { coding { code } } instance { uid number sopClass { code } } } } }"""


async def _median(run: Callable[[], Awaitable[Any]], repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def main() -> None:
    _, db = client.open_embedded("bench")
    repo = Repository(db)
    await repo.create(demo.study("bench", 20, 500))
    context = Context(repo=repo, settings=Settings(seed=False))

    async def execute() -> Any:
        result = await schema.execute(VIEWER, {"id": "bench"}, context_value=context)
        assert result.errors is None, result.errors
        return result.data

    data = await execute()

    async def read() -> Any:
        return await repo.get("bench")

    async def encode() -> Any:
        return json.dumps(data)

    rows = [("store read", await _median(read)), ("json.dumps of response", await _median(encode)),
            ("schema execution", await _median(execute))]
    base = rows[1][1]
    print(f"{'open study B (20 x 500), viewer fields':<44}{'median ms':>10}{'x json':>9}")
    for name, seconds in rows:
        print(f"  {name:<42}{seconds * 1000:>10.1f}{seconds / base:>9.1f}")


if __name__ == "__main__":
    asyncio.run(main())
