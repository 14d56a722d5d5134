"""The write operations as pure functions: current study in, next study out (or a StoreError).
Every write path goes through here, so the rules hold the same way for all of them. Inputs are
never mutated; an unchanged result is returned as the very same object."""

from __future__ import annotations

import copy
from typing import Any

from store.fhir import Study, derive, lifecycle
from store.fhir.definitions import status_codes
from store.fhir.identity import identity_issues
from store.fhir.outcome import BAD_USER_INPUT, Issue, fail, invalid
from store.fhir.validate import (
    MAX_SERIES,
    ROOT,
    part_issues,
    size_issues,
    uid_issues,
    validate,
)

SERIES_KEY = "ImagingStudy.series"
INSTANCE_KEY = "ImagingStudy.series.instance"


def _checked(study: Study, max_instances: int, max_series: int) -> Study:
    issues = validate(study, max_instances, max_series) or identity_issues(study)
    if issues:
        raise invalid(issues)
    derive.fill(study)
    return study


def create(resource: Study, max_instances: int, max_series: int = MAX_SERIES) -> Study:
    study = _checked({"resourceType": ROOT, **copy.deepcopy(resource)}, max_instances, max_series)
    lifecycle.check_create(study)
    return study


def replace(old: Study, resource: Study, max_instances: int, max_series: int = MAX_SERIES) -> Study:
    lifecycle.check_writable(old)
    new = _checked({"resourceType": ROOT, **copy.deepcopy(resource)}, max_instances, max_series)
    if old["status"] == "cancelled":
        old_uids = _instance_uids(old)
        if {s["uid"] for s in new.get("series") or ()} - {
            s["uid"] for s in old.get("series") or ()
        } or _instance_uids(new) - old_uids:
            lifecycle.check_can_grow(old)
    lifecycle.check_transition(old, new)
    return new


def set_status(old: Study, status: str) -> Study:
    if old["status"] == status:
        return old
    lifecycle.check_writable(old)
    if status not in status_codes():
        raise fail(
            BAD_USER_INPUT,
            lifecycle.STATUS,
            f"'{status}' is not an R5 ImagingStudyStatus code ({', '.join(status_codes())})",
        )
    new = {**old, "status": status}
    lifecycle.check_transition(old, new)
    return new


def add_series(
    old: Study, series: list[dict[str, Any]], max_instances: int, max_series: int = MAX_SERIES
) -> Study:
    lifecycle.check_writable(old)
    lifecycle.check_can_grow(old)
    new = copy.copy(old)
    new["series"] = list(old.get("series") or ()) + copy.deepcopy(series)
    start = len(old.get("series") or ())
    issues = [
        issue
        for k, item in enumerate(new["series"][start:], start)
        for issue in part_issues(new, SERIES_KEY, item, f"{ROOT}.series[{k}]")
    ]
    return _finish(old, new, issues, max_instances, max_series)


def add_instances(
    old: Study, series_uid: str, instances: list[dict[str, Any]], max_instances: int
) -> Study:
    lifecycle.check_writable(old)
    index = _series_index(old, series_uid)
    target = old["series"][index]
    stored = {i.get("uid"): i for i in target.get("instance") or ()}
    elsewhere = _instance_uids(old) - stored.keys()
    fresh: list[dict[str, Any]] = []
    issues: list[Issue] = []
    base = f"{ROOT}.series[{index}].instance"
    listed = len(target.get("instance") or ())
    for k, instance in enumerate(instances):
        uid = instance.get("uid") if isinstance(instance, dict) else None
        # Where the instance would stand once added: after those listed and the fresh before
        # it (`stored` takes in the fresh ones too, for duplicates within the batch).
        where = f"{base}[{listed + len(fresh)}]"
        if uid in stored:
            if stored[uid] != instance:
                issues.append(
                    Issue(
                        f"{where}.uid",
                        f"instance UID {uid} (instances[{k}]) is "
                        "already in this series with different content",
                    )
                )
            continue
        if uid in elsewhere:
            issues.append(
                Issue(
                    f"{where}.uid",
                    f"instance UID {uid} (instances[{k}]) is "
                    "already in another series of this study",
                )
            )
            continue
        issues += part_issues(old, INSTANCE_KEY, instance, where)
        if uid is not None:
            stored[uid] = instance
        fresh.append(copy.deepcopy(instance))
    if issues:
        raise invalid(issues)
    if not fresh:
        return old  # every instance was already there: a safe retry changes nothing
    lifecycle.check_can_grow(old)
    new = copy.copy(old)
    new["series"] = list(old["series"])
    new["series"][index] = {**target, "instance": list(target.get("instance") or ()) + fresh}
    # No series is added: the series cap (which a study stored under a higher one may
    # exceed) is not this write's to check.
    return _finish(old, new, [], max_instances, len(new["series"]))


def remove_series(old: Study, uids: list[str]) -> Study:
    lifecycle.check_writable(old)
    for uid in uids:
        _series_index(old, uid)
    gone = set(uids)
    new = copy.deepcopy(old)
    removed = [s for s in new.get("series") or () if s["uid"] in gone]
    kept = [s for s in new.get("series") or () if s["uid"] not in gone]
    if kept:
        new["series"] = kept
    else:
        new.pop("series", None)
    derive.forget_series(new, removed)
    derive.fill(new)
    lifecycle.check_instances(new)
    return new


def remove_instances(old: Study, series_uid: str, uids: list[str]) -> Study:
    lifecycle.check_writable(old)
    index = _series_index(old, series_uid)
    listed = {i["uid"] for i in old["series"][index].get("instance") or ()}
    missing = [uid for uid in uids if uid not in listed]
    if missing:
        raise fail(
            BAD_USER_INPUT,
            f"{ROOT}.series[{index}].instance",
            f"series {series_uid} has no instance with UID {', '.join(missing)}",
        )
    gone = set(uids)
    new = copy.deepcopy(old)
    series = new["series"][index]
    kept = [i for i in series.get("instance") or () if i["uid"] not in gone]
    if kept:
        series["instance"] = kept
    else:
        series.pop("instance", None)
    derive.forget_instances(new, series, len(gone))
    derive.fill(new)
    lifecycle.check_instances(new)
    return new


def _finish(
    old: Study, new: Study, issues: list[Issue], max_instances: int, max_series: int
) -> Study:
    if issues:
        raise invalid(issues)
    issues = uid_issues(new) + size_issues(new, max_instances, max_series, written=True)
    if issues:
        raise invalid(issues)
    derive.fill(new)
    lifecycle.check_transition(old, new)
    return new


def _series_index(study: Study, uid: str) -> int:
    for index, series in enumerate(study.get("series") or ()):
        if series["uid"] == uid:
            return index
    raise fail(BAD_USER_INPUT, f"{ROOT}.series", f"the study has no series with UID {uid}")


def _instance_uids(study: Study) -> set[str]:
    return {i["uid"] for s in study.get("series") or () for i in s.get("instance") or ()}
