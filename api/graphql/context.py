"""The typed context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strawberry

from api.access.audit import touched_by_operation
from api.access.auth import Access, Authenticator
from api.access.scoped import ScopedStore
from api.settings import Settings
from store.mongo.events import Bus
from store.mongo.repository import Repository


def bearer(params: dict[str, Any] | None) -> str | None:
    """The Authorization value of graphql-transport-ws connection parameters, where clients
    put it as `Authorization`, `authorization` or (Apollo's form) `headers.Authorization`."""
    headers = (params or {}).get("headers")
    for where in (params or {}, headers if isinstance(headers, dict) else {}):
        for name in ("Authorization", "authorization"):
            if isinstance(value := where.get(name), str):
                return value
    return None


@dataclass
class Context:
    # The raw repository: private. Resolvers reach the store only through `store`, the access
    # gate, so none of them can forget a check.
    _repo: Repository
    settings: Settings
    request: Any = None
    response: Any = None
    events: Bus = field(default_factory=Bus)
    authenticator: Authenticator | None = None
    authorization: str | None = None  # the Authorization header
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init
    # The study of an instance-level `[base]/ImagingStudy/{id}/$graphql` request: there a
    # study that is not found is an error (NOT_FOUND), which the audit records as such.
    rooted_at: str | None = None
    _access: Access | None = None
    _store: ScopedStore | None = None

    @property
    def access(self) -> Access:
        """The caller's access, from the Authorization header or, on a WebSocket (where a
        browser cannot set headers), from the connection parameters (see `bearer`)."""
        if self._access is None:
            header = bearer(self.connection_params) or self.authorization
            self._access = self.authenticator.access(header) if self.authenticator else Access()
        return self._access

    @property
    def store(self) -> ScopedStore:
        """The store as this caller may use it in the current operation: made anew for each
        operation (a WebSocket carries many on one context) and whenever the access changes."""
        access = self.access
        touched = touched_by_operation.get()
        if touched is None:  # outside an audited operation (benchmarks run the bare schema)
            touched = self._store.touched if self._store is not None else []
        if (
            self._store is None
            or self._store.access is not access
            or self._store.touched is not touched
        ):
            self._store = ScopedStore(self._repo, access, touched)
        return self._store

    def metrics_subscriptions(self, delta: int) -> None:
        metrics = getattr(getattr(self.request, "app", None), "state", None)
        if metrics is not None and hasattr(metrics, "metrics"):
            metrics.metrics.subscriptions.inc(delta)


Info = strawberry.Info[Context, None]
