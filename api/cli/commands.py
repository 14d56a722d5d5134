"""The `imaging-api` command: serve, schema, import, export, ingest-dicom and sync-dicomweb.

Commands that write go straight to MongoDB when MONGODB_URI is set, and otherwise to a running
server through its GraphQL API (`--url`, else IMAGING_URL, else this host's IMAGING_HOST and
IMAGING_PORT: the address `serve` would listen on)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from api.http.logs import configure as configure_logs
from api.settings import Settings, SettingsError
from api.transfer.targets import LocalTarget, RemoteError, RemoteTarget, Target
from store.fhir.outcome import OutcomeError
from store.mongo import client
from store.mongo.search import CODES, graphql_name


def _version() -> str:
    try:
        return f"imaging-api {metadata.version('imaging-api')}"
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "imaging-api (version unknown: not installed)"


def _command(commands: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    """A command whose help ends with an example and which answers --version, as every
    command does."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the version and exit"
    )
    return parser


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="GraphQL URL of the server to write to when MONGODB_URI "
        "is unset (default IMAGING_URL, else http://IMAGING_HOST:IMAGING_PORT"
        "/graphql, which is http://127.0.0.1:8000/graphql unless set)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imaging-api",
        description="FHIR R5 ImagingStudy GraphQL service",
        epilog="example:\n  imaging-api serve --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the version and exit"
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do (each command has --help)",
    )
    serve = _command(
        commands,
        "serve",
        "serve GraphQL (GraphiQL at /graphql)",
        "imaging-api serve --port 8080 --ingest-dicom ~/dicom",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or IMAGING_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or IMAGING_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes (default 1, or IMAGING_WORKERS); more than one needs MONGODB_URI",
    )
    serve.add_argument(
        "--no-seed",
        action="store_true",
        help="start the embedded store empty (same as IMAGING_SEED=0)",
    )
    serve.add_argument(
        "--import",
        dest="preload",
        action="append",
        default=[],
        metavar="PATH",
        help="import FHIR JSON/NDJSON files at start-up",
    )
    serve.add_argument(
        "--ingest-dicom",
        dest="preload_dicom",
        action="append",
        default=[],
        metavar="PATH",
        help="ingest DICOM files or folders at start-up",
    )
    _command(
        commands, "schema", "print the GraphQL schema (SDL)", "imaging-api schema > schema.graphql"
    )
    _command(
        commands,
        "apollo-cache",
        'print the Apollo Client cache configuration (an ES module; README "Using Apollo Client")',
        "imaging-api apollo-cache > src/apollo-cache.js",
    )
    scan = _command(
        commands,
        "ingest-dicom",
        "ingest DICOM files (headers only) from files or folders, recursively",
        "imaging-api ingest-dicom --timezone +01:00 --verbose ~/dicom/CT",
    )
    scan.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="DICOM file or folder (searched recursively); each must exist",
    )
    scan.add_argument("--endpoint", help="Endpoint reference for the studies, e.g. Endpoint/wado")
    scan.add_argument(
        "--timezone",
        help="time zone offset (+HH:MM) for files without "
        "TimezoneOffsetFromUTC; without it such studies get a date only",
    )
    scan.add_argument(
        "--verbose",
        action="store_true",
        help="list every skipped file with the reason it was skipped",
    )
    _url_option(scan)
    sync = _command(
        commands,
        "sync-dicomweb",
        "index the studies of a DICOMweb server (a PACS: QIDO-RS and WADO-RS metadata); "
        "incremental, so it can run again, or --watch",
        "imaging-api sync-dicomweb http://pacs:8042/dicom-web --since 2024-01-01 --watch 60",
    )
    sync.add_argument(
        "dicomweb_url",
        metavar="URL",
        help="the DICOMweb base (its QIDO-RS and WADO-RS root); credentials come from "
        "IMAGING_DICOMWEB_TOKEN, or IMAGING_DICOMWEB_USER and IMAGING_DICOMWEB_PASSWORD",
    )
    sync.add_argument(
        "--since",
        metavar="DATE",
        help="only studies whose StudyDate is DATE (YYYY-MM-DD) or later",
    )
    sync.add_argument(
        "--study",
        action="append",
        default=[],
        metavar="UID",
        help="only this Study Instance UID (repeatable)",
    )
    sync.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="poll again every SECONDS until stopped (Ctrl-C or SIGTERM print the summary)",
    )
    sync.add_argument(
        "--timezone",
        help="time zone offset (+HH:MM) for instances without TimezoneOffsetFromUTC",
    )
    _url_option(sync)
    load = _command(
        commands,
        "import",
        "import FHIR JSON (.json resources or Bundles, .ndjson) from files or folders",
        "imaging-api import --dry-run studies/",
    )
    load.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help=".json or .ndjson file, or folder (searched recursively); each must exist",
    )
    load.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    _url_option(load)
    dump = _command(
        commands,
        "export",
        "export studies as NDJSON or a searchset Bundle",
        "imaging-api export --format bundle --modality CT --out ct.json",
    )
    dump.add_argument(
        "--format",
        choices=("ndjson", "bundle"),
        default="ndjson",
        help="ndjson: one study a line (default); bundle: one searchset Bundle",
    )
    dump.add_argument("--out", help="file to write (default standard output)")
    _url_option(dump)
    dump.add_argument("--sort", help="_sort, e.g. -started")
    for code in CODES:
        dump.add_argument(
            f"--{code.replace(':', '-')}",  # patient:identifier is --patient-identifier
            dest=graphql_name(code),
            action="append",
            default=[],
            metavar="VALUE",
            help=f"search {code} (repeatable: AND)",
        )
    return parser


@asynccontextmanager
async def target(settings: Settings, url: str | None) -> AsyncIterator[Target]:
    """MongoDB itself when MONGODB_URI is set, else the server at `url` (by default the one
    the settings name)."""
    if settings.mongodb_uri:
        from api.http.app import open_repository

        handle, repo = open_repository(settings)
        try:
            await repo.ensure_indexes()
            yield LocalTarget(repo)
        finally:
            client.close(handle)
    else:
        remote = RemoteTarget(url or settings.server_url, token=settings.token)
        try:
            yield remote
        finally:
            await remote.client.aclose()


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from api.transfer.stream import run_import

    if _missing("import", args.paths):
        return 2
    async with target(settings, args.url) as where:
        report = await run_import(where, args.paths, args.dry_run)
    print(report.table())
    return 0 if report.ok else 1


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from api.transfer.stream import open_output, run_export

    params = [(code, value) for code in CODES for value in getattr(args, graphql_name(code))]
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
    from api.transfer.progress import Progress
    from store.interop.dicom import offset
    from store.interop.ingest import Ingest

    zone = offset(args.timezone) if args.timezone else None
    if args.timezone and zone is None:
        print("imaging-api ingest-dicom: --timezone must look like +01:00", file=sys.stderr)
        return 2
    if _missing("ingest-dicom", args.paths):
        return 2
    progress = Progress("files")

    def skipped(path: Path, reason: str) -> None:
        progress.clear()  # the list goes to standard output; keep the progress line whole
        print(f"skipped {path}: {reason}", flush=True)

    async with target(settings, args.url) as where:
        ingest = Ingest(
            where, timezone=zone, endpoint=args.endpoint, on_skip=skipped if args.verbose else None
        )
        report = await ingest.run(args.paths, progress)
    progress.done()
    print(report.table())
    return 1 if report.failed else 0


async def _sync(settings: Settings, args: argparse.Namespace) -> int:
    from api.transfer.sync import SyncOptions, run_sync

    try:
        options = SyncOptions.parse(args.since, args.study, args.watch, args.timezone)
    except ValueError as error:
        print(f"imaging-api sync-dicomweb: {error}", file=sys.stderr)
        return 2
    async with target(settings, args.url) as where:
        return await run_sync(where, settings, args.dicomweb_url, options)


def _missing(command: str, paths: list[str]) -> bool:
    """Says which given paths do not exist (a typo must not pass as an empty run)."""
    missing = [path for path in paths if not Path(path).exists()]
    if missing:
        print(
            f"imaging-api {command}: no such file or folder: {', '.join(missing)}", file=sys.stderr
        )
    return bool(missing)


def _bind_error(host: str, port: int) -> OSError | None:
    """The error binding host:port the way uvicorn binds (SO_REUSEADDR); None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            return error
    return None


def _cannot_listen(host: str, port: int) -> str | None:
    """Why `serve` cannot listen on host:port, so the answer comes before anything claims to
    be serving; None when it can. A port in use gets the next one that is free suggested."""
    error = _bind_error(host, port)
    if error is None:
        return None
    if error.errno != errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: {error.strerror or error}"
    free = next(
        (p for p in range(port + 1, min(port + 100, 65536)) if _bind_error(host, p) is None), None
    )
    suggestion = f"choose another with --port {free}, or" if free else "choose another with"
    return (
        f"port {port} on {host} is already in use (another server?); {suggestion} set IMAGING_PORT"
    )


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.http.app import create_app
    from api.http.server import uvicorn_options

    overrides = {"host": args.host, "port": args.port, "workers": args.workers}
    settings = dataclasses.replace(
        settings,
        **{k: v for k, v in overrides.items() if v},
        preload=tuple(args.preload),
        preload_dicom=tuple(args.preload_dicom),
    )
    if args.no_seed:
        settings = dataclasses.replace(settings, seed=False)
    if settings.workers > 1 and (settings.embedded or settings.preload or settings.preload_dicom):
        print(
            "imaging-api serve: several workers need MONGODB_URI (each worker would have an "
            "embedded store of its own) and no --import/--ingest-dicom",
            file=sys.stderr,
        )
        return 2
    refusal = _cannot_listen(settings.host, settings.port)
    if refusal:
        print(f"imaging-api serve: {refusal}", file=sys.stderr)
        return 2
    configure_logs(fmt=settings.log_format)
    store = (
        f"MongoDB database '{settings.mongodb_db}'"
        if settings.mongodb_uri
        else "the embedded in-process store (data is lost on exit)"
    )
    logging.getLogger("imaging.api").info(
        "serving GraphQL on http://%s:%d/graphql over %s", settings.host, settings.port, store
    )
    if settings.workers > 1:
        # Each worker builds the app from the environment: it is the same settings.
        os.environ.update(IMAGING_HOST=settings.host, IMAGING_PORT=str(settings.port))
        uvicorn.run(
            "api.http.app:from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=None,
            **uvicorn_options(settings),
        )
        return 0
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        **uvicorn_options(settings),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":  # serve sets up its own logs, once it is sure to run
        # Warnings only: the command's own output is what matters, not a line per HTTP call.
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "schema":
        from api.graphql.schema import schema

        sys.stdout.write(schema.as_str() + "\n")
        return 0
    if args.command == "apollo-cache":
        from api.graphql.schema import schema
        from api.http.apollo_cache import module

        sys.stdout.write(module(schema._schema))
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as error:  # a message for the operator, not a traceback
        print(f"imaging-api {args.command}: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args)
    command = {
        "import": _import,
        "export": _export,
        "ingest-dicom": _ingest,
        "sync-dicomweb": _sync,
    }[args.command]
    try:
        return asyncio.run(command(settings, args))
    except (RemoteError, OutcomeError) as error:
        print(f"imaging-api {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `imaging-api export | head`: the reader has all it wanted
        # Python would hit the closed pipe again flushing at exit: point stdout elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
