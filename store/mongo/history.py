"""History kept as reverse patches: what each version's entry holds, and rebuilding versions.

Every stored study document carries, in `_srv.back`, the JSON Patch (store/fhir/patch.py) that
turns it back into the version it replaced; the write computes it from two versions it has in
hand, the one it replaces and the one it makes, and stores it in the same compare-and-set.
When that document is replaced in turn, its `_srv.back` becomes the history entry of the
version before it: `{_id: "id/v", _srv: {study, version: v, patch}}` turns version v+1 into v.

Why the patch rides on the document rather than being written into history by the write that
makes it: the entry inserted before a compare-and-set then describes two versions that are
both already acknowledged (v+1, which is being replaced, and v), so it is the same whoever
writes it. A write that inserts it and then loses the race has inserted exactly what the
winner inserts; nothing stale can exist, and the rule of the insert-only history stands: a
second insert of an entry is harmless when equal and a bug (HistoryClash) when not. At every
instant every acknowledged version can be rebuilt: the current one is the document, the one
before from its `_srv.back`, and each older one from its entry, which was inserted before the
compare-and-set that made its successor's successor.

Full snapshots: an entry with no patch holds the version whole, as every entry written before
patches did (so existing stores keep working unmigrated), and a delete's patch adds back the
whole study, which makes it one in effect. No snapshot is taken every N versions: versions are
only ever rebuilt newest first from the current document, so a snapshot would shorten no
rebuild, and at one per N versions it would hold (versions / N) copies of the study, which for
a study grown one instance per write is more than all its patches together."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from store.fhir import Study, patch


def _public(doc: dict[str, Any]) -> Study:
    return {k: v for k, v in doc.items() if k not in ("_id", "_srv")}


def back_patch(new_body: Study, old: Study) -> list[patch.Op]:
    """The patch from a new version's FHIR JSON back to the version it replaces."""
    return patch.diff(new_body, old)


def entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The history entry that a stored document's replacement must insert first: the patch
    from this version to the one before it (None when the document has none: a first
    version, or one written before patches, whose predecessor was kept whole)."""
    back = doc.get("_srv", {}).get("back")
    if back is None:
        return None
    version = int(doc["meta"]["versionId"]) - 1
    srv = {"study": doc["id"], "version": version, "patch": back}
    return {"_id": f"{doc['id']}/{version}", "_srv": srv}


def same_entry(stored: dict[str, Any], doc: dict[str, Any], successor: Study) -> bool:
    """Whether an entry already stored under a version says what `doc` says. A whole
    version kept by an older release (or a crash) is the same when it equals the version the
    patch rebuilds from `successor`."""
    if stored == doc:
        return True
    if "patch" in stored.get("_srv", {}) or "patch" not in doc["_srv"]:
        return False
    return patch.equal(_public(stored), patch.apply(successor, doc["_srv"]["patch"]))


def live(version: Study) -> bool:
    """A tombstone's FHIR JSON is its id and meta only: a deleted study, not a version."""
    return "resourceType" in version


async def rebuild(
    current: dict[str, Any] | None, entries: AsyncIterator[dict[str, Any]]
) -> AsyncGenerator[Study, None]:
    """Every version that can be rebuilt, tombstones included, newest first: from the current
    document and the history entries in descending version order. A gap (an entry missing, as
    for the tombstone an older release re-created a study over) skips the versions only a
    patch could give, until the next whole one."""
    content: Study | None = None
    below: int | None = None  # the version `content` is
    carried: list[patch.Op] | None = None  # the current document's patch to the one below
    if current is not None:
        content = _public(current)
        below = int(current["meta"]["versionId"])
        carried = current.get("_srv", {}).get("back")
        yield content
    async for doc in entries:
        version: int = doc["_srv"]["version"]
        if below is not None and version >= below:
            continue
        if below is not None and version < below - 1 and carried is not None and content:
            # The version below the current one, whose entry is not written yet.
            content, below, carried = patch.apply(content, carried), below - 1, None
            yield content
        ops = doc["_srv"].get("patch")
        if ops is None:
            content = _public(doc)
        elif content is not None and below == version + 1:
            content = patch.apply(content, ops)
        else:
            content = None  # a gap: only a whole version goes on
        below, carried = version, None
        if content is not None:
            yield content
    if carried is not None and content is not None:
        yield patch.apply(content, carried)


def projected(version: Study, fields: Iterable[str] | None) -> Study:
    """A rebuilt version cut to the top-level elements of `fields` (None: whole), as the
    embedded store projects every read."""
    if fields is None:
        return version
    tops = {f.split(".", 1)[0] for f in fields} | {"id", "resourceType", "meta", "subject"}
    return {k: v for k, v in version.items() if k in tops}
