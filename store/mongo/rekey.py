"""Search keys brought up to date in place, for studies stored before the keys changed form.

Every write stores the keys of `store/mongo/keys.py` with their form, `_srv.kv`. A study
written by an older version of the service keeps its older keys until it is next written, so
a search added since (the `:identifier` arguments) would not find it. At start-up, after the
indexes, each live study whose keys are older is given its current keys by one update under
its `meta.versionId`: a write that lands in between stores current keys itself, so the update
that loses the race is simply not needed. Only `_srv` changes: the study, its version and its
history do not, and the change-stream mapping (store/mongo/events.py) publishes no event for
an update of `_srv` alone."""

from __future__ import annotations

import logging
from typing import Any

from store.mongo.keys import KEYS_VERSION, search_keys

log = logging.getLogger("imaging.store")

STALE = {"_srv.deleted": False, "_srv.kv": {"$ne": KEYS_VERSION}}
# Only what the keys are made of is read: a study's instances carry keys too (their classes and
# UIDs), so the whole study is read, one at a time, from a cursor.
_BATCH = 100


async def rekey(studies: Any) -> int:
    """Gives every live study with keys of an older form its current keys; returns how many
    were updated (0 on a store written by this version)."""
    updated = 0
    cursor = studies.find(STALE).batch_size(_BATCH)
    async for doc in cursor:
        body = {k: v for k, v in doc.items() if k not in ("_id", "_srv")}
        if not isinstance(body.get("meta"), dict) or "lastUpdated" not in body["meta"]:
            continue  # not a study this service wrote: left as it is
        keys = search_keys(body)
        result = await studies.update_one(
            {"_id": doc["_id"], "meta.versionId": body["meta"].get("versionId"), **STALE},
            {"$set": {f"_srv.{name}": value for name, value in keys.items() if name != "uid"}},
        )
        updated += result.modified_count
    if updated:
        log.info("search keys brought up to date on %d stored studies", updated)
    return updated
