"""Settings.from_env(): the one place that reads the environment. ENVIRONMENT lists every
variable with the field it sets, so the README's table can be checked against it.

Every value is parsed strictly and a value that is not understood refuses to start (a typo in
IMAGING_AUTH must not quietly serve without authentication): SettingsError names the variable
and what it accepts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_CURSOR_SECRET = "imaging-api cursors"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
LOG_FORMATS = ("auto", "text", "json")  # IMAGING_LOG_FORMAT
_INTEGER = re.compile(r"[+-]?[0-9]+")
_HOST = re.compile(r"\*|\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and its allowed values."""


def _flag(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(f"must be one of {', '.join(_TRUE + _FALSE)} (any case), not {value!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        word = value.strip().lower()
        if word not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)} (any case), not {value!r}")
        return word

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = value.strip()
        if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
            raise ValueError(f"must be an integer from {low} to {high}, not {value!r}")
        return int(text)

    return parse


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _url(value: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", text):
        raise ValueError(
            f"must be an http:// or https:// URL, such as "
            f"http://127.0.0.1:8000/graphql, not {value!r}"
        )
    return text


def _hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(host.lower() for host in _list(value))
    wrong = [host for host in hosts if not _HOST.fullmatch(host)]
    if wrong or not hosts:
        raise ValueError(
            "must be a comma-separated list of host names or IP addresses "
            f"(IPv6 in brackets, no port; * allows any), not {value!r}"
        )
    return hosts


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
    # The compiled execution of plain-data subtrees (api/graphql/execution.py); off: plain
    # graphql-core, the reference it is tested against, for ruling it out when something looks
    # wrong.
    compiled: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_instances: int = 50_000  # per study; keeps a study well inside MongoDB's 16 MiB document
    max_series: int = 1_000  # per study; what a query's cost prices a study's series at
    # Megabytes of decoded studies each process keeps by version (store/mongo/cache.py), counted
    # as stored (BSON or JSON); Python holds about 4x that. 0: off.
    cache_mb: int = 64
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
    # Values one operation may return, counted on the studies it read (about 1 s of work on
    # one core): bounds aliases of a large study, which the cost (priced at caps) lets through.
    max_result_values: int = 300_000
    # Seconds one operation may wait on the store in all (its reads run one after another):
    # bounds aliases of slow searches, which the embedded store answers by scanning.
    max_store_seconds: int = 3
    # Studies one operation may read by resolving references (Reference.resource): a list of
    # references must not multiply the reads of one query without bound.
    max_reference_reads: int = 100
    max_body_bytes: int = 8 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    # Apollo's automatic persisted queries: query text kept by hash, per worker (0: off).
    persisted_query_bytes: int = 4 * 1024 * 1024
    max_subscriptions: int = 100  # operations in flight on one WebSocket
    subscriber_backlog: int = 1_000  # events a subscriber may fall behind before it is ended
    # Recent change events each process keeps so a subscriber can resume (`after`) after a
    # disconnect; each one holds the study version it carries. 0: no resuming.
    event_history: int = 1_000
    # Host names the server answers to while authentication is off: a page on another site that
    # rebinds its own name to 127.0.0.1 sends its own name as Host (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    header_timeout_seconds: int = 10  # a connection's request line and headers
    body_timeout_seconds: int = 60  # a request's whole body, from its first read
    max_connections: int = 1_000  # beyond this, uvicorn answers 503
    auth: str = "off"  # "jwt": bearer tokens with SMART on FHIR scopes
    jwt_secret: str | None = None  # HS256
    jwt_public_key: str | None = None  # RS256/ES256: a PEM file
    jwt_jwks: str | None = None  # RS256/ES256: a JWKS file
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = 30  # clock skew allowed on exp, nbf and iat
    # Signs paging cursors. Set the same value on every instance behind a load balancer.
    cursor_secret: str = DEFAULT_CURSOR_SECRET
    # The server the CLI writes to when MONGODB_URI is unset; None: this host and port.
    url: str | None = None
    # The bearer token the CLI sends to that server (auth on). From the environment only: a
    # command-line option would show it in every process listing. Kept out of the repr.
    token: str | None = field(default=None, repr=False)
    # Credentials `sync-dicomweb` sends to the DICOMweb server (a PACS): a bearer token, or
    # HTTP basic auth with a user and password. From the environment only, out of the repr.
    dicomweb_token: str | None = field(default=None, repr=False)
    dicomweb_user: str | None = None
    dicomweb_password: str | None = field(default=None, repr=False)
    # "auto": readable lines on a terminal, JSON lines otherwise; "text" or "json" to choose.
    log_format: str = "auto"
    preload: tuple[str, ...] = ()  # FHIR JSON files imported at start-up (serve --import)
    preload_dicom: tuple[str, ...] = ()  # DICOM files ingested at start-up

    def __post_init__(self) -> None:
        # Settings made in code get the same fail-closed reading as the environment's.
        for name, allowed in (
            ("env", ("development", "production")),
            ("auth", ("off", "jwt")),
            ("log_format", LOG_FORMATS),
        ):
            if getattr(self, name) not in allowed:
                raise SettingsError(
                    f"Settings.{name} must be one of {', '.join(allowed)}, "
                    f"not {getattr(self, name)!r}"
                )

    @property
    def embedded(self) -> bool:
        return not self.mongodb_uri

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def server_url(self) -> str:
        """The GraphQL URL the CLI talks to: IMAGING_URL, else where `serve` listens with
        these settings (a wildcard address is reached on the loopback)."""
        if self.url:
            return self.url
        host = {
            "0.0.0.0": "127.0.0.1",
            "*": "127.0.0.1",
            "::": "[::1]",
            "[::]": "[::1]",
            "": "127.0.0.1",
        }.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/graphql"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment (or `env`) gives; SettingsError if any is unusable."""
        env = os.environ if env is None else env
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for variable, (name, parse) in ENVIRONMENT.items():
            assert name in known, name
            if variable in FAIL_CLOSED and variable in env and not env[variable].strip():
                # An empty security switch is a template left unfilled, not "use the default".
                raise SettingsError(f"{variable} is set but empty; give it a value or unset it")
            if env.get(variable, "") != "":
                try:
                    values[name] = parse(env[variable])
                except ValueError as error:
                    raise SettingsError(f"{variable} {error}") from None
        settings = cls(**values)
        if settings.production and settings.cursor_secret == DEFAULT_CURSOR_SECRET:
            # The built-in value is public: anyone could forge cursors.
            raise SettingsError(
                "IMAGING_CURSOR_SECRET must be set (to a secret of your own) "
                "when IMAGING_ENV is production"
            )
        if settings.auth == "jwt" and not (
            settings.jwt_secret or settings.jwt_public_key or settings.jwt_jwks
        ):
            raise SettingsError(
                "IMAGING_AUTH=jwt needs IMAGING_JWT_SECRET, "
                "IMAGING_JWT_PUBLIC_KEY or IMAGING_JWT_JWKS"
            )
        if settings.auth == "off" and (
            settings.jwt_secret or settings.jwt_public_key or settings.jwt_jwks
        ):
            # A key with authentication off is a deployment that meant to switch it on.
            raise SettingsError(
                "a JWT key is set but IMAGING_AUTH is off: set IMAGING_AUTH=jwt"
                " (or unset the key to run without authentication)"
            )
        if settings.dicomweb_token and (settings.dicomweb_user or settings.dicomweb_password):
            raise SettingsError(
                "IMAGING_DICOMWEB_TOKEN and IMAGING_DICOMWEB_USER/IMAGING_DICOMWEB_PASSWORD "
                "are two ways to authenticate to the DICOMweb server: set one"
            )
        if bool(settings.dicomweb_user) != bool(settings.dicomweb_password):
            raise SettingsError(
                "IMAGING_DICOMWEB_USER and IMAGING_DICOMWEB_PASSWORD go together (basic auth)"
            )
        if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < 32:
            # HS256 with a short key can be brute-forced offline (RFC 7518 section 3.2).
            raise SettingsError("IMAGING_JWT_SECRET must be at least 32 bytes (256 bits)")
        return settings


FAIL_CLOSED = (
    "IMAGING_AUTH",
    "IMAGING_ENV",
    "IMAGING_JWT_SECRET",
    "IMAGING_JWT_PUBLIC_KEY",
    "IMAGING_JWT_JWKS",
    "IMAGING_CURSOR_SECRET",
)


# A parser raises ValueError with what it accepts; from_env puts the variable's name in front.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "IMAGING_ENV": ("env", _choice("development", "production")),
    "MONGODB_URI": ("mongodb_uri", str),
    "MONGODB_DB": ("mongodb_db", str),
    "MONGODB_TIMEOUT_MS": ("mongodb_timeout_ms", _integer(1, 600_000)),
    "MONGODB_WRITE_CONCERN": ("mongodb_write_concern", str),
    "MONGODB_RETRY_WRITES": ("mongodb_retry_writes", _flag),
    "IMAGING_SEED": ("seed", _flag),
    "IMAGING_COMPILED": ("compiled", _flag),
    "IMAGING_HOST": ("host", str),
    "IMAGING_PORT": ("port", _integer(1, 65_535)),
    "IMAGING_WORKERS": ("workers", _integer(1, 256)),
    "IMAGING_MAX_INSTANCES": ("max_instances", _integer(1, 1_000_000)),
    "IMAGING_MAX_SERIES": ("max_series", _integer(1, 100_000)),
    "IMAGING_CACHE_MB": ("cache_mb", _integer(0, 1_000_000)),
    "IMAGING_LIST_MAX_COUNT": ("list_max_count", _integer(1, 100_000)),
    "IMAGING_SEARCH_MAX_VALUES": ("search_max_values", _integer(1, 100_000)),
    "IMAGING_SEARCH_MAX_TOTAL_VALUES": ("search_max_total_values", _integer(1, 1_000_000)),
    "IMAGING_SEARCH_MAX_VALUE_LENGTH": ("search_max_value_length", _integer(1, 1_000_000)),
    "IMAGING_MAX_DEPTH": ("max_depth", _integer(1, 1_000)),
    "IMAGING_MAX_ALIASES": ("max_aliases", _integer(0, 100_000)),
    "IMAGING_MAX_TOKENS": ("max_tokens", _integer(1, 10_000_000)),
    "IMAGING_MAX_QUERY_LENGTH": ("max_query_length", _integer(1, 100_000_000)),
    "IMAGING_MAX_COST": ("max_cost", _integer(1, 10**15)),
    "IMAGING_MAX_RESULT_VALUES": ("max_result_values", _integer(1, 10**12)),
    "IMAGING_MAX_STORE_SECONDS": ("max_store_seconds", _integer(1, 3_600)),
    "IMAGING_MAX_REFERENCE_READS": ("max_reference_reads", _integer(0, 100_000)),
    "IMAGING_MAX_BODY_BYTES": ("max_body_bytes", _integer(1_024, 2**31)),
    "IMAGING_CORS_ORIGINS": ("cors_origins", _list),
    "IMAGING_PERSISTED_QUERY_BYTES": ("persisted_query_bytes", _integer(0, 2**31)),
    "IMAGING_MAX_SUBSCRIPTIONS": ("max_subscriptions", _integer(1, 100_000)),
    "IMAGING_SUBSCRIBER_BACKLOG": ("subscriber_backlog", _integer(1, 10_000_000)),
    "IMAGING_EVENT_HISTORY": ("event_history", _integer(0, 1_000_000)),
    "IMAGING_ALLOWED_HOSTS": ("allowed_hosts", _hosts),
    "IMAGING_HEADER_TIMEOUT_SECONDS": ("header_timeout_seconds", _integer(1, 300)),
    "IMAGING_BODY_TIMEOUT_SECONDS": ("body_timeout_seconds", _integer(1, 3_600)),
    "IMAGING_MAX_CONNECTIONS": ("max_connections", _integer(1, 100_000)),
    "IMAGING_AUTH": ("auth", _choice("off", "jwt")),
    "IMAGING_JWT_SECRET": ("jwt_secret", str),
    "IMAGING_JWT_PUBLIC_KEY": ("jwt_public_key", str),
    "IMAGING_JWT_JWKS": ("jwt_jwks", str),
    "IMAGING_JWT_AUDIENCE": ("jwt_audience", str),
    "IMAGING_JWT_ISSUER": ("jwt_issuer", str),
    "IMAGING_JWT_LEEWAY_SECONDS": ("jwt_leeway_seconds", _integer(0, 600)),
    "IMAGING_CURSOR_SECRET": ("cursor_secret", str),
    "IMAGING_URL": ("url", _url),
    "IMAGING_TOKEN": ("token", str),
    "IMAGING_LOG_FORMAT": ("log_format", _choice(*LOG_FORMATS)),
    "IMAGING_DICOMWEB_TOKEN": ("dicomweb_token", str),
    "IMAGING_DICOMWEB_USER": ("dicomweb_user", str),
    "IMAGING_DICOMWEB_PASSWORD": ("dicomweb_password", str),
}
