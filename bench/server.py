"""The HTTP benchmark server: the real app (compiled or not) on 127.0.0.1 over an embedded
store loaded with the benchmark data. Run by bench/__main__.py in a process of its own."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import uvicorn

from api.app import create_app
from api.settings import Settings
from bench import data
from store import client
from store.repository import Repository


async def load(repo: Repository, worklist: int) -> None:
    await repo.ensure_indexes()
    await repo.create(data.study("A", 20, 500))
    await repo.create(data.study("D", 1, 5_000))
    for resource in data.worklist(worklist):
        await repo.create(resource)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worklist", type=int, default=500)
    args = parser.parse_args()
    _, db = client.open_embedded("bench")
    repo = Repository(db)
    asyncio.run(load(repo, args.worklist))
    logging.disable(logging.INFO)  # the access log would measure the terminal
    app: Any = create_app(Settings(seed=False), repo)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
