"""The typed context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import strawberry

from api.settings import Settings
from store.repository import Repository


@dataclass
class Context:
    repo: Repository
    settings: Settings
    request: Any = None
    response: Any = None


Info = strawberry.Info[Context, None]
