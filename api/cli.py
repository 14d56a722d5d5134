"""The `imaging-api` command: `serve` runs the GraphQL service, `schema` prints its SDL."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from api.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imaging-api", description="FHIR R5 ImagingStudy "
                                     "GraphQL service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve GraphQL (GraphiQL at /graphql)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or IMAGING_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or IMAGING_PORT)")
    serve.add_argument("--no-seed", action="store_true",
                       help="start the embedded store empty (same as IMAGING_SEED=0)")
    commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        from api.schema import schema

        sys.stdout.write(schema.as_str() + "\n")
        return 0
    settings = Settings.from_env()
    overrides = {"host": args.host, "port": args.port}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v})
    if args.no_seed:
        settings = dataclasses.replace(settings, seed=False)
    import uvicorn

    from api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    store = f"MongoDB database '{settings.mongodb_db}'" if settings.mongodb_uri else \
        "the embedded in-process store (data is lost on exit)"
    logging.getLogger("imaging.api").info("serving GraphQL on http://%s:%d/graphql over %s",
                                          settings.host, settings.port, store)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
