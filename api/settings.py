"""Settings.from_env(): the one place that reads the environment. ENVIRONMENT lists every
variable with the field it sets, so the README's table can be checked against it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Service configuration. Every field has a working default for `make serve`."""

    env: str = "development"  # "production": no introspection, GraphiQL or suggestions
    mongodb_uri: str | None = None
    mongodb_db: str = "imaging"
    mongodb_timeout_ms: int = 2_000  # server selection: fail fast while the store is down
    mongodb_write_concern: str = "majority"
    mongodb_retry_writes: bool = True
    seed: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_instances: int = 50_000  # per study; keeps a study well inside MongoDB's 16 MiB document
    max_series: int = 1_000  # per study; what a query's cost prices a study's series at
    list_default_count: int = 20
    list_max_count: int = 1_000
    history_max_count: int = 1_000
    search_max_values: int = 100  # per search argument: comma-separated values and list items
    search_max_total_values: int = 300  # over all the search arguments of a field
    search_max_value_length: int = 1_024  # characters of one search value
    max_depth: int = 15
    max_aliases: int = 30
    max_tokens: int = 10_000
    max_query_length: int = 100_000  # characters; a longer query is refused unparsed
    max_cost: int = 2_000_000
    max_body_bytes: int = 8 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    max_subscriptions: int = 100  # operations in flight on one WebSocket
    subscriber_backlog: int = 1_000  # events a subscriber may fall behind before it is ended
    auth: str = "off"  # "jwt": bearer tokens with SMART on FHIR scopes
    jwt_secret: str | None = None  # HS256
    jwt_public_key: str | None = None  # RS256/ES256: a PEM file
    jwt_jwks: str | None = None  # RS256/ES256: a JWKS file
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Signs paging cursors. Set the same value on every instance behind a load balancer.
    cursor_secret: str = "imaging-api cursors"
    preload: tuple[str, ...] = ()  # FHIR JSON files imported at start-up (serve --import)
    preload_dicom: tuple[str, ...] = ()  # DICOM files ingested at start-up

    @property
    def embedded(self) -> bool:
        return not self.mongodb_uri

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for variable, (name, parse) in ENVIRONMENT.items():
            assert name in known, name
            if env.get(variable, "") != "":
                values[name] = parse(env[variable])
        return cls(**values)


ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "IMAGING_ENV": ("env", str),
    "MONGODB_URI": ("mongodb_uri", str),
    "MONGODB_DB": ("mongodb_db", str),
    "MONGODB_TIMEOUT_MS": ("mongodb_timeout_ms", int),
    "MONGODB_WRITE_CONCERN": ("mongodb_write_concern", str),
    "MONGODB_RETRY_WRITES": ("mongodb_retry_writes", _flag),
    "IMAGING_SEED": ("seed", _flag),
    "IMAGING_HOST": ("host", str),
    "IMAGING_PORT": ("port", int),
    "IMAGING_WORKERS": ("workers", int),
    "IMAGING_MAX_INSTANCES": ("max_instances", int),
    "IMAGING_MAX_SERIES": ("max_series", int),
    "IMAGING_LIST_MAX_COUNT": ("list_max_count", int),
    "IMAGING_SEARCH_MAX_VALUES": ("search_max_values", int),
    "IMAGING_SEARCH_MAX_TOTAL_VALUES": ("search_max_total_values", int),
    "IMAGING_SEARCH_MAX_VALUE_LENGTH": ("search_max_value_length", int),
    "IMAGING_MAX_DEPTH": ("max_depth", int),
    "IMAGING_MAX_ALIASES": ("max_aliases", int),
    "IMAGING_MAX_TOKENS": ("max_tokens", int),
    "IMAGING_MAX_QUERY_LENGTH": ("max_query_length", int),
    "IMAGING_MAX_COST": ("max_cost", int),
    "IMAGING_MAX_BODY_BYTES": ("max_body_bytes", int),
    "IMAGING_CORS_ORIGINS": ("cors_origins", _list),
    "IMAGING_MAX_SUBSCRIPTIONS": ("max_subscriptions", int),
    "IMAGING_SUBSCRIBER_BACKLOG": ("subscriber_backlog", int),
    "IMAGING_AUTH": ("auth", str),
    "IMAGING_JWT_SECRET": ("jwt_secret", str),
    "IMAGING_JWT_PUBLIC_KEY": ("jwt_public_key", str),
    "IMAGING_JWT_JWKS": ("jwt_jwks", str),
    "IMAGING_JWT_AUDIENCE": ("jwt_audience", str),
    "IMAGING_JWT_ISSUER": ("jwt_issuer", str),
    "IMAGING_CURSOR_SECRET": ("cursor_secret", str),
}
