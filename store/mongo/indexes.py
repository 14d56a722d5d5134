"""The indexes of the study collections, each with the reason it exists. Created idempotently
at start-up (create_index is a no-op for an index that already exists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store.mongo.client import Database, DriverError, StoreDown


class IndexConflict(Exception):
    """A unique index the stored data does not allow yet."""


@dataclass(frozen=True)
class Index:
    collection: str
    keys: list[tuple[str, int]]
    reason: str
    unique: bool = False
    partial: dict[str, Any] | None = None  # a partialFilterExpression

    @property
    def name(self) -> str:
        return "_".join(f"{field}_{direction}" for field, direction in self.keys)


STUDIES = "imaging_study"
HISTORY = "imaging_study_history"
INDEXES = [
    Index(
        STUDIES,
        [("_srv.k.p", 1), ("_srv.k.c", 1), ("_srv.k.s", 1)],
        "every token and reference parameter: identifier, modality, body-site, dicom-class, "
        "reason, subject/patient, encounter, based-on, referrer, endpoint, performer, "
        "body-structure, and the :identifier modifier of based-on, patient, performer, "
        "referrer and subject (multikey over the private keys)",
    ),
    Index(STUDIES, [("series.uid", 1)], "the series parameter (multikey over series)"),
    Index(
        STUDIES,
        [("series.instance.uid", 1)],
        "the instance parameter (multikey over every instance of every series)",
    ),
    Index(
        STUDIES,
        [("_srv.started.lo", 1), ("_srv.started.hi", 1)],
        "started date ranges (eq, ge, lt, sa, ap, ...)",
    ),
    Index(STUDIES, [("_srv.lu.lo", 1), ("_srv.lu.hi", 1)], "_lastUpdated date ranges"),
    Index(
        STUDIES,
        [("_srv.deleted", 1), ("_srv.sort.nostart", 1), ("_srv.sort.started", -1), ("_id", 1)],
        "the default worklist order -started with its _id tie-break",
    ),
    Index(
        STUDIES,
        [("_srv.deleted", 1), ("_srv.lu.lo", -1), ("_id", 1)],
        "_sort=_lastUpdated (either direction) with its _id tie-break",
    ),
    Index(
        STUDIES,
        [("_srv.deleted", 1), ("status", 1), ("_id", 1)],
        "the status parameter and _sort=status",
    ),
    Index(
        STUDIES,
        [("_srv.uid", 1)],
        "one live study per DICOM Study Instance UID (deleted "
        "studies carry no key, so a UID may be used again after a delete)",
        unique=True,
        partial={"_srv.uid": {"$type": "string"}},
    ),
    Index(
        STUDIES,
        [("_srv.kv", 1)],
        "studies whose search keys are of an older form, brought up to date at start-up "
        "(store/mongo/rekey.py): once they are, finding none reads no document",
    ),
    Index(
        STUDIES,
        [("_id", 1), ("_srv.deleted", 1), ("subject.reference", 1), ("meta.versionId", 1)],
        "the study cache's version probe (store/mongo/cache.py): a covered read of one study's "
        "current version under the live and subject conditions, never loading the document",
    ),
    Index(
        HISTORY,
        [("_srv.study", 1), ("_srv.version", -1)],
        "a study's history, newest version first",
    ),
]


async def ensure(db: Database) -> None:
    """Creates every index; raises IndexConflict at the end when a unique one could not be."""
    conflicts: list[str] = []
    for index in INDEXES:
        options: dict[str, Any] = {"name": index.name}
        if index.unique:
            options["unique"] = True
        if index.partial is not None:
            options["partialFilterExpression"] = index.partial
        try:
            await db[index.collection].create_index(index.keys, **options)
        except StoreDown:
            raise
        except DriverError as error:
            if not index.unique:
                raise
            # A database written before the index existed may hold duplicates: the service
            # still runs (every other index is made), and the operator is told what to fix.
            conflicts.append(
                f"index {index.name} on {index.collection} could not be "
                f"created ({type(error).__name__}): {index.reason}. Find the "
                "live studies that share a key and resolve them (update or "
                "delete all but one), then restart."
            )
    if conflicts:
        raise IndexConflict(" ".join(conflicts))


def plan() -> list[dict[str, Any]]:
    """The indexes as data, for operators and tests."""
    return [{"collection": i.collection, "name": i.name, "reason": i.reason} for i in INDEXES]


def stages(plan: Any) -> list[str]:
    """The stages of the winning plan in an `explain` answer (`COLLSCAN`, `IXSCAN`,
    `FETCH`, ...), in any nesting: a sharded cluster's per-shard plans, $or's inputs."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("stage"), str):
                found.append(node["stage"])
            for key, value in node.items():
                if key != "rejectedPlans":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(plan.get("queryPlanner", plan) if isinstance(plan, dict) else plan)
    return found
