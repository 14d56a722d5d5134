"""The HTTP benchmark server: the real app on 127.0.0.1 over an embedded store loaded with the
benchmark data. Run by bench/__main__.py and bench/load.py in a process of its own."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from typing import Any

import uvicorn

from api.http.app import create_app
from api.http.server import uvicorn_options
from api.settings import Settings
from bench import data
from store.mongo import client
from store.mongo.repository import Repository


async def load(repo: Repository, worklist: int) -> None:
    await repo.ensure_indexes()
    await repo.create(data.study("A", 20, 500))
    await repo.create(data.study("D", 1, 5_000))
    await repo.create(data.study("P", 1, 10_000))  # one series: a page at offset 2,000
    for resource in data.worklist(worklist):
        await repo.create(resource)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worklist", type=int, default=500)
    parser.add_argument(
        "--outage",
        default="",
        metavar="START,SECONDS",
        help="make the store unavailable SECONDS long, START seconds after "
        "start-up (the fault seam of store/mongo/client.py; for the load test)",
    )
    parser.add_argument("--cache-mb", type=int, default=Settings().cache_mb)
    args = parser.parse_args()
    _, db = client.open_embedded("bench")
    faults = client.Faults()
    asyncio.run(load(Repository(db), args.worklist))
    # The fault seam only where an outage is asked for: it is not in the served app's path.
    served = client.with_faults(db, faults) if args.outage else db
    repo = Repository(served, cache_bytes=args.cache_mb * 2**20)
    logging.disable(logging.INFO)  # the access log would measure the terminal
    settings = Settings(seed=False, cache_mb=args.cache_mb)
    app: Any = create_app(settings, repo)
    if args.outage:
        start, seconds = (float(v) for v in args.outage.split(","))
        threading.Timer(start, lambda: setattr(faults, "down", True)).start()
        threading.Timer(start + seconds, lambda: setattr(faults, "down", False)).start()
    # As `serve` runs it (its protocol, header deadline and connection cap).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        **uvicorn_options(settings),
    )


if __name__ == "__main__":
    main()
