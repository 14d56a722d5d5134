"""Derived elements: numberOfSeries, numberOfInstances, series.numberOfInstances and the study
modality list are filled in when absent and never fall below what the study lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _coding_keys(concept: dict[str, Any]) -> set[tuple[Any, Any]]:
    return {(c.get("system"), c.get("code")) for c in concept.get("coding") or ()}


def order_key(item: dict[str, Any]) -> tuple[bool, int, str]:
    """Where a series or an instance sorts: by number, unnumbered last, then by UID."""
    number = item.get("number")
    return number is None, number or 0, item.get("uid", "")


def fill(study: dict[str, Any]) -> None:
    """Fills the derived elements of `study` in place, and keeps series and instances in
    (number, uid) order, unnumbered ones last, so every read pages in a stable order for free."""
    series = study.get("series") or []
    series.sort(key=order_key)
    for item in series:
        if "instance" in item:
            item["instance"].sort(key=order_key)
    total = 0
    modality: list[dict[str, Any]] = list(study.get("modality") or ())
    known = set().union(*(_coding_keys(m) for m in modality)) if modality else set()
    for item in series:
        listed = len(item.get("instance") or ())
        item["numberOfInstances"] = max(item.get("numberOfInstances", 0), listed)
        total += listed
        keys = _coding_keys(item["modality"])
        if keys and not keys <= known:
            modality.append(item["modality"])
            known |= keys
    study["numberOfSeries"] = max(study.get("numberOfSeries", 0), len(series))
    study["numberOfInstances"] = max(study.get("numberOfInstances", 0), total)
    if modality:
        study["modality"] = modality


def forget_series(study: dict[str, Any], removed: Iterable[dict[str, Any]]) -> None:
    """Lowers the derived elements for series about to leave the study, before `fill` runs:
    the counts by what left, and modality entries no remaining series carries any more."""
    removed = list(removed)
    study["numberOfSeries"] = max(0, study.get("numberOfSeries", 0) - len(removed))
    study["numberOfInstances"] = max(
        0,
        study.get("numberOfInstances", 0)
        - sum(s.get("numberOfInstances", len(s.get("instance") or ())) for s in removed),
    )
    gone = set().union(*(_coding_keys(s["modality"]) for s in removed)) if removed else set()
    kept = set().union(*(_coding_keys(s["modality"]) for s in study.get("series") or ()))
    modality = [
        m
        for m in study.get("modality") or ()
        if not (_coding_keys(m) & gone) or (_coding_keys(m) & kept)
    ]
    if modality:
        study["modality"] = modality
    else:
        study.pop("modality", None)


def forget_instances(study: dict[str, Any], series: dict[str, Any], removed: int) -> None:
    """Lowers the instance counts for `removed` instances leaving `series`."""
    series["numberOfInstances"] = max(0, series.get("numberOfInstances", 0) - removed)
    study["numberOfInstances"] = max(0, study.get("numberOfInstances", 0) - removed)
