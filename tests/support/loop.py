"""Event-loop turns, counted: a call that holds the loop stops the count."""

from __future__ import annotations

import asyncio


class LoopTicks:
    """Counts event-loop turns while the block runs: a call that holds the loop stops it."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
