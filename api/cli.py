"""The `imaging-api` command: serve, schema, import, export and ingest-dicom.

Commands that write go straight to MongoDB when MONGODB_URI is set, and otherwise to a running
server (`--url`, default the address `make serve` uses) through its GraphQL API."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.logs import configure as configure_logs
from api.search_args import CODES
from api.settings import Settings, SettingsError
from api.targets import DEFAULT_URL, LocalTarget, RemoteError, RemoteTarget, Target
from store import client
from store.fhir.outcome import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imaging-api", description="FHIR R5 ImagingStudy "
                                     "GraphQL service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve GraphQL (GraphiQL at /graphql)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or IMAGING_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or IMAGING_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1, or "
                       "IMAGING_WORKERS); more than one needs MONGODB_URI")
    serve.add_argument("--no-seed", action="store_true",
                       help="start the embedded store empty (same as IMAGING_SEED=0)")
    serve.add_argument("--import", dest="preload", action="append", default=[],
                       metavar="PATH", help="import FHIR JSON/NDJSON files at start-up")
    serve.add_argument("--ingest-dicom", dest="preload_dicom", action="append", default=[],
                       metavar="PATH", help="ingest DICOM files or folders at start-up")
    commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    commands.add_parser("apollo-cache", help="print the Apollo Client cache configuration "
                        "(an ES module; README \"Using Apollo Client\")")
    scan = commands.add_parser("ingest-dicom", help="ingest DICOM files (headers only) from "
                               "files or folders, recursively")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--endpoint", help="Endpoint reference for the studies, e.g. "
                      "Endpoint/wado")
    scan.add_argument("--timezone", help="time zone offset (+HH:MM) for files without "
                      "TimezoneOffsetFromUTC; without it such studies get a date only")
    scan.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    load = commands.add_parser("import", help="import FHIR JSON (.json resources or Bundles, "
                               ".ndjson) from files or folders")
    load.add_argument("paths", nargs="+", metavar="PATH")
    load.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    load.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    dump = commands.add_parser("export", help="export studies as NDJSON or a searchset Bundle")
    dump.add_argument("--format", choices=("ndjson", "bundle"), default="ndjson")
    dump.add_argument("--out", help="file to write (default standard output)")
    dump.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    dump.add_argument("--sort", help="_sort, e.g. -started")
    for code in CODES:
        dump.add_argument(f"--{code}", dest=code.replace("-", "_"), action="append", default=[],
                          metavar="VALUE", help=f"search {code} (repeatable: AND)")
    return parser


@asynccontextmanager
async def target(settings: Settings, url: str) -> AsyncIterator[Target]:
    """MongoDB itself when MONGODB_URI is set, else the server at `url`."""
    if settings.mongodb_uri:
        from api.app import open_repository

        handle, repo = open_repository(settings)
        try:
            await repo.ensure_indexes()
            yield LocalTarget(repo)
        finally:
            client.close(handle)
    else:
        remote = RemoteTarget(url)
        try:
            yield remote
        finally:
            await remote.client.aclose()


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from api.transfer import run_import

    async with target(settings, args.url) as where:
        report = await run_import(where, args.paths, args.dry_run)
    print(report.table())
    return 0 if report.ok else 1


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from api.transfer import open_output, run_export

    params = [(code, value) for code in CODES for value in getattr(args, code.replace("-", "_"))]
    out = open_output(args.out)
    try:
        async with target(settings, args.url) as where:
            count = await run_export(where, params, args.format, out, args.sort)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {count} studies", file=sys.stderr)
    return 0


async def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    from api.progress import Progress
    from store.dicom import offset
    from store.ingest import Ingest

    zone = offset(args.timezone) if args.timezone else None
    if args.timezone and zone is None:
        print("imaging-api ingest-dicom: --timezone must look like +01:00", file=sys.stderr)
        return 2
    progress = Progress("files")
    async with target(settings, args.url) as where:
        report = await Ingest(where, timezone=zone, endpoint=args.endpoint).run(args.paths,
                                                                                progress)
    progress.done()
    print(report.table())
    return 1 if report.failed else 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.server import uvicorn_options

    overrides = {"host": args.host, "port": args.port, "workers": args.workers}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v},
                                   preload=tuple(args.preload),
                                   preload_dicom=tuple(args.preload_dicom))
    if args.no_seed:
        settings = dataclasses.replace(settings, seed=False)
    if settings.workers > 1 and (settings.embedded or settings.preload or
                                 settings.preload_dicom):
        print("imaging-api serve: several workers need MONGODB_URI (each worker would have an "
              "embedded store of its own) and no --import/--ingest-dicom", file=sys.stderr)
        return 2
    configure_logs()
    store = f"MongoDB database '{settings.mongodb_db}'" if settings.mongodb_uri else \
        "the embedded in-process store (data is lost on exit)"
    logging.getLogger("imaging.api").info("serving GraphQL on http://%s:%d/graphql over %s",
                                          settings.host, settings.port, store)
    if settings.workers > 1:
        # Each worker builds the app from the environment: it is the same settings.
        os.environ.update(IMAGING_HOST=settings.host, IMAGING_PORT=str(settings.port))
        uvicorn.run("api.app:from_env", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_config=None, **uvicorn_options(settings))
        return 0
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                **uvicorn_options(settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":  # serve logs JSON lines, set up once it is sure to run
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "schema":
        from api.schema import schema

        sys.stdout.write(schema.as_str() + "\n")
        return 0
    if args.command == "apollo-cache":
        from api.apollo_cache import module
        from api.schema import schema

        sys.stdout.write(module(schema._schema))
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as error:  # a message for the operator, not a traceback
        print(f"imaging-api {args.command}: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args)
    command = {"import": _import, "export": _export, "ingest-dicom": _ingest}[args.command]
    try:
        return asyncio.run(command(settings, args))
    except (RemoteError, StoreError) as error:
        print(f"imaging-api {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
