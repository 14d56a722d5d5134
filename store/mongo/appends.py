"""Appending instances to a study as one guarded update whose cost follows the change.

The common write of a PACS feed adds a few instances to a series, in number order. Instead of
reading the whole study, checking it whole and replacing it, the append reads a projection (the
study's meta, status, subject, counts and the series summary below), checks only the new
instances, and makes one `find_one_and_update` under the version condition
`{_id, meta.versionId: old}` that `$push`es them to `series.<index>.instance` (an index is
stable while the version is; arrayFilters are avoided, mongomock has none) and `$set`s the
derived counts, `meta`, the search keys and the patch back to the old version in the same
update. The instance UIDs must stay unique in the study: the filter also requires
`series.instance.uid: {$nin: new UIDs}` (the multikey index answers it on MongoDB), so a UID
already anywhere in the study makes the update match nothing.

Whenever the append is not plainly valid (a refused status, a series or instance UID not as
expected, an invalid instance, a duplicate UID, the instance cap, or new instances that sort
before the series' last one, which `derive.fill` would put in the middle), `plan_instances`
answers None, and the repository runs the whole rules instead (store/fhir/edit.py), which give
the refusal or the retry's no-op exactly as before. Only documented operators are used
(`$push` with `$each`, `$set` of dotted array indexes, `$addToSet` with `$each`, `$nin`).

Series are appended alike (`plan_series`), after the study's last series.

`_srv.s`, kept by every write, summarises each series by position: its UID `u`, its order key
`k`, its listed instance count `n`, its `numberOfInstances` value `d`, and the order key `t` of
its last instance, so an append needs none of the instances."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from store.fhir import Study
from store.fhir.derive import order_key
from store.fhir.edit import INSTANCE_KEY, SERIES_KEY
from store.fhir.validate import ROOT, part_issues
from store.mongo.keys import part_keys, updated_range

# What an append reads of the stored study: never a series or an instance.
FIELDS = {
    field: 1
    for field in (
        "id",
        "resourceType",
        "meta",
        "status",
        "subject",
        "contained",
        "numberOfInstances",
        "numberOfSeries",
        "modality",
        "_srv.s",
        "_srv.back",
    )
}


def summary(study: Study) -> list[dict[str, Any]]:
    """The `_srv.s` summary of a study's series, by position."""
    made = []
    for series in study.get("series") or ():
        instances = series.get("instance") or ()
        made.append(
            {
                "u": series.get("uid"),
                "k": list(order_key(series)),
                "n": len(instances),
                "d": series.get("numberOfInstances"),
                "t": list(order_key(instances[-1])) if instances else None,
            }
        )
    return made


@dataclass
class Plan:
    """One guarded update: its filter and its update document."""

    filter: dict[str, Any]
    update: dict[str, Any]


def plan_instances(
    doc: dict[str, Any],
    series_uid: str,
    instances: list[dict[str, Any]],
    max_instances: int,
    now: str,
) -> Plan | None:
    """The update that appends `instances` to the series `series_uid` of the stored study
    `doc` (read with FIELDS), or None when the whole rules must decide."""
    series = doc.get("_srv", {}).get("s")
    if series is None or doc.get("status") in ("cancelled", "entered-in-error") or not instances:
        return None
    index = next((k for k, s in enumerate(series) if s["u"] == series_uid), None)
    if index is None:
        return None
    uids = [i.get("uid") if isinstance(i, dict) else None for i in instances]
    if not all(isinstance(uid, str) for uid in uids) or len(set(uids)) != len(uids):
        return None
    listed = series[index]["n"]
    base = f"{ROOT}.series[{index}].instance"
    for k, instance in enumerate(instances):
        if part_issues(doc, INSTANCE_KEY, instance, f"{base}[{listed + k}]"):
            return None
    if sum(s["n"] for s in series) + len(instances) > max_instances:
        return None
    fresh = sorted((copy.deepcopy(i) for i in instances), key=order_key)
    tail = series[index]["t"]
    if tail is not None and order_key(fresh[0]) <= tuple(tail):
        return None
    version = int(doc["meta"]["versionId"])
    meta = {**doc["meta"], "versionId": str(version + 1), "lastUpdated": now}
    count = listed + len(fresh)
    declared = max(series[index]["d"] or 0, count)
    total = max(doc.get("numberOfInstances") or 0, sum(s["n"] for s in series) + len(fresh))
    here = f"/series/{index}"
    back: list[dict[str, Any]] = (
        [{"op": "remove", "path": f"{here}/instance/{k}"} for k in range(count - 1, listed - 1, -1)]
        if listed
        else [{"op": "remove", "path": f"{here}/instance"}]
    )
    back += _restore(f"{here}/numberOfInstances", series[index]["d"], declared)
    back += _restore("/numberOfInstances", doc.get("numberOfInstances"), total)
    back.append({"op": "replace", "path": "/meta", "value": doc["meta"]})
    update: dict[str, Any] = {
        "$push": {f"series.{index}.instance": {"$each": fresh}},
        "$set": {
            "meta": meta,
            f"series.{index}.numberOfInstances": declared,
            "numberOfInstances": total,
            "_srv.lu": updated_range(now),
            "_srv.back": back,
            f"_srv.s.{index}": {
                **series[index],
                "n": count,
                "d": declared,
                "t": list(order_key(fresh[-1])),
            },
        },
    }
    keys = part_keys([{"instance": fresh}])
    if keys:
        update["$addToSet"] = {"_srv.k": {"$each": keys}}
    guard = {
        "_id": doc["_id"],
        "meta.versionId": doc["meta"]["versionId"],
        f"series.{index}.uid": series_uid,
        "series.instance.uid": {"$nin": uids},
    }
    return Plan(guard, update)


def _restore(path: str, old: Any, new: Any) -> list[dict[str, Any]]:
    """The patch operation that puts a derived count back, if the append changed it."""
    if old == new:
        return []
    if old is None:
        return [{"op": "remove", "path": path}]
    return [{"op": "replace", "path": path, "value": old}]


def plan_series(
    doc: dict[str, Any],
    new: list[dict[str, Any]],
    max_instances: int,
    max_series: int,
    now: str,
) -> Plan | None:
    """The update that appends the series `new` to the stored study `doc` (read with
    FIELDS), or None when the whole rules must decide."""
    series = doc.get("_srv", {}).get("s")
    if (
        series is None
        or doc.get("status") in ("cancelled", "entered-in-error")
        or not new
        or any("k" not in s for s in series)
    ):
        return None
    start = len(series)
    for k, item in enumerate(new):
        if part_issues(doc, SERIES_KEY, item, f"{ROOT}.series[{start + k}]"):
            return None
    uids = [item["uid"] for item in new]
    instance_uids = [i["uid"] for item in new for i in item.get("instance") or ()]
    if (
        len(set(uids)) != len(uids)
        or set(uids) & {s["u"] for s in series}
        or len(set(instance_uids)) != len(instance_uids)
        or start + len(new) > max_series
        or sum(s["n"] for s in series) + len(instance_uids) > max_instances
    ):
        return None
    fresh = sorted((copy.deepcopy(item) for item in new), key=order_key)
    if series and order_key(fresh[0]) <= tuple(series[-1]["k"]):
        return None
    summaries = []
    for item in fresh:  # as derive.fill leaves them
        if "instance" in item:
            item["instance"].sort(key=order_key)
        item["numberOfInstances"] = max(
            item.get("numberOfInstances", 0), len(item.get("instance") or ())
        )
        summaries.extend(summary({"series": [item]}))
    version = int(doc["meta"]["versionId"])
    meta = {**doc["meta"], "versionId": str(version + 1), "lastUpdated": now}
    n_series = max(doc.get("numberOfSeries") or 0, start + len(fresh))
    total = max(doc.get("numberOfInstances") or 0, sum(s["n"] for s in series) + len(instance_uids))
    modality = _modality(doc.get("modality"), fresh)
    back: list[dict[str, Any]] = (
        [
            {"op": "remove", "path": f"/series/{k}"}
            for k in range(start + len(fresh) - 1, start - 1, -1)
        ]
        if start
        else [{"op": "remove", "path": "/series"}]
    )
    back += _restore("/numberOfSeries", doc.get("numberOfSeries"), n_series)
    back += _restore("/numberOfInstances", doc.get("numberOfInstances"), total)
    back += _restore("/modality", doc.get("modality"), modality)
    back.append({"op": "replace", "path": "/meta", "value": doc["meta"]})
    changed: dict[str, Any] = {
        "meta": meta,
        "numberOfSeries": n_series,
        "numberOfInstances": total,
        "_srv.lu": updated_range(now),
        "_srv.back": back,
    }
    if modality is not None:
        changed["modality"] = modality
    update: dict[str, Any] = {
        "$push": {"series": {"$each": fresh}, "_srv.s": {"$each": summaries}},
        "$set": changed,
    }
    keys = part_keys(fresh)
    if keys:
        update["$addToSet"] = {"_srv.k": {"$each": keys}}
    guard: dict[str, Any] = {"_id": doc["_id"], "meta.versionId": doc["meta"]["versionId"]}
    if instance_uids:
        guard["series.instance.uid"] = {"$nin": instance_uids}
    return Plan(guard, update)


def _modality(
    known: list[dict[str, Any]] | None, fresh: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The study's modality list after new series, as derive.fill makes it."""
    modality = list(known or ())
    seen = {(c.get("system"), c.get("code")) for m in modality for c in m.get("coding") or ()}
    for item in fresh:
        codes = {(c.get("system"), c.get("code")) for c in item["modality"].get("coding") or ()}
        if codes and not codes <= seen:
            modality.append(item["modality"])
            seen |= codes
    return modality or None
