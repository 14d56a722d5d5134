"""The typed context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strawberry

from api.auth import Access
from api.settings import Settings
from store.repository import Repository


@dataclass
class Context:
    repo: Repository
    settings: Settings
    request: Any = None
    response: Any = None
    access: Access = field(default_factory=Access)
    # (study id, patient reference) of every study the operation touched, for the audit.
    touched: list[tuple[str, str | None]] = field(default_factory=list)

    def allow(self, letters: str, operation: str) -> str | None:
        """Checks the caller's scopes; returns the patient id it is confined to, if any."""
        return self.access.require(letters, operation)

    def touch(self, study: dict[str, Any] | None) -> None:
        if study and "id" in study:
            self.touched.append((study["id"], study.get("subject", {}).get("reference")))


Info = strawberry.Info[Context, None]
