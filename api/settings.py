"""Settings.from_env(): the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Settings:
    """Service configuration. Every field has a working default for `make serve`."""

    mongodb_uri: str | None = None
    mongodb_db: str = "imaging"
    seed: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    max_instances: int = 50_000  # per study; keeps a study well inside MongoDB's 16 MiB document
    list_default_count: int = 20
    list_max_count: int = 1_000
    history_max_count: int = 1_000
    # Signs paging cursors. Set the same value on every instance behind a load balancer.
    cursor_secret: str = "imaging-api cursors"
    preload: tuple[str, ...] = ()  # FHIR JSON files imported at start-up (serve --import)
    preload_dicom: tuple[str, ...] = ()  # DICOM files ingested at start-up

    @property
    def embedded(self) -> bool:
        return not self.mongodb_uri

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            mongodb_uri=env.get("MONGODB_URI") or None,
            mongodb_db=env.get("MONGODB_DB", defaults.mongodb_db),
            seed=_flag(env.get("IMAGING_SEED", "1")),
            host=env.get("IMAGING_HOST", defaults.host),
            port=int(env.get("IMAGING_PORT", defaults.port)),
            max_instances=int(env.get("IMAGING_MAX_INSTANCES", defaults.max_instances)),
            list_max_count=int(env.get("IMAGING_LIST_MAX_COUNT", defaults.list_max_count)),
            cursor_secret=env.get("IMAGING_CURSOR_SECRET", defaults.cursor_secret),
        )
