"""Endpoint references added to a stored study: what ingest (the DICOMweb sync) gives a study
or series it meets already stored without the WADO-RS base it carries.

Only ever added: a reference already there (another PACS's, a hand-written one) stays where it
is and the new one is appended after it, and a study that holds every reference already is
returned as the very same object, so the write that asks changes no version."""

from __future__ import annotations

import copy
from typing import Any

from store.fhir import Study, edit
from store.fhir.validate import MAX_SERIES

Reference = dict[str, Any]
# Series UID -> the endpoint references that series should hold.
SeriesEndpoints = dict[str, list[Reference]]


def _key(ref: Reference) -> tuple[Any, ...]:
    # What a reference points at, not how it is labelled: a display written differently is
    # the same Endpoint, so a second sync appends nothing.
    if isinstance(ref.get("reference"), str):
        return ("reference", ref["reference"])
    identifier = ref.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value") is not None:
        return ("identifier", identifier.get("system"), identifier["value"])
    return ("whole", repr(sorted(ref.items())))


def _missing(held: list[Reference] | None, wanted: list[Reference]) -> list[Reference]:
    keys = {_key(r) for r in held or () if isinstance(r, dict)}
    found = []
    for ref in wanted:
        if _key(ref) not in keys:
            keys.add(_key(ref))
            found.append(ref)
    return found


def lacking(
    stored: Study, study: list[Reference], series: SeriesEndpoints
) -> tuple[list[Reference], SeriesEndpoints]:
    """The references of `study` the stored study lacks, and of `series` (by UID) each stored
    series lacks; a series UID the stored study does not have is left out (a series added
    later brings its own)."""
    stored_series = {s.get("uid"): s for s in stored.get("series") or ()}
    per_series = {
        uid: missing
        for uid, refs in series.items()
        if uid in stored_series and (missing := _missing(stored_series[uid].get("endpoint"), refs))
    }
    return _missing(stored.get("endpoint"), study), per_series


def with_endpoints(old: Study, study: list[Reference], series: SeriesEndpoints) -> Study:
    """`old` with the references it lacks appended (no rule checked: the server that is
    sent the result checks it); `old` itself when it lacks none. `old` is not changed."""
    add_study, add_series = lacking(old, study, series)
    if not add_study and not add_series:
        return old
    new = dict(old)
    if add_study:
        new["endpoint"] = [*(old.get("endpoint") or ()), *copy.deepcopy(add_study)]
    if add_series:
        new["series"] = [
            {**s, "endpoint": [*(s.get("endpoint") or ()), *copy.deepcopy(add_series[s["uid"]])]}
            if s.get("uid") in add_series
            else s
            for s in old.get("series") or ()
        ]
    return new


def add_endpoints(
    old: Study,
    study: list[Reference],
    series: SeriesEndpoints,
    max_instances: int,
    max_series: int = MAX_SERIES,
) -> Study:
    """The write: `old` with the references it lacks, under every rule of a whole update
    (an entered-in-error study is read-only, the references must be valid); `old` itself
    when it lacks none, so nothing is written."""
    new = with_endpoints(old, study, series)
    if new is old:
        return old
    return edit.replace(old, new, max_instances, max_series)
