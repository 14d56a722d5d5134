"""The status lifecycle (README "Status lifecycle"): which status changes a write may make, and what
each status lets a study still take."""

from __future__ import annotations

from typing import Any

from store.fhir.outcome import BAD_USER_INPUT, INVALID_STATUS_TRANSITION, StoreError, fail
from store.fhir.validate import count_instances

_NEEDS_INSTANCE = "available"
# from -> the statuses a write may move to (no-ops are always allowed and change nothing)
TRANSITIONS: dict[str, frozenset[str]] = {
    "registered": frozenset({"available", "cancelled", "entered-in-error"}),
    "available": frozenset({"cancelled", "entered-in-error"}),
    "cancelled": frozenset({"entered-in-error"}),
    "entered-in-error": frozenset(),
    "unknown": frozenset({"registered", "available", "cancelled", "entered-in-error"}),
}
CREATABLE = frozenset({"registered", "available", "cancelled", "unknown"})
STATUS = "ImagingStudy.status"


def _refuse(diagnostics: str) -> StoreError:
    return fail(INVALID_STATUS_TRANSITION, STATUS, diagnostics)


def check_create(study: dict[str, Any]) -> None:
    """A new study's status: nothing transitions, so a refusal is bad input naming the rule
    (BAD_USER_INPUT), not INVALID_STATUS_TRANSITION."""
    status = study["status"]
    if status not in CREATABLE:
        raise fail(
            BAD_USER_INPUT,
            STATUS,
            f"a study cannot be created as '{status}'; create "
            f"it as one of {', '.join(sorted(CREATABLE))}",
        )
    if status == _NEEDS_INSTANCE and count_instances(study) == 0:
        raise fail(
            BAD_USER_INPUT,
            STATUS,
            "a study created as 'available' must list at least "
            "one instance; create it as 'registered' and set 'available' once it has "
            "instances",
        )


def check_writable(old: dict[str, Any]) -> None:
    """An entered-in-error study is read-only: every change is refused."""
    if old["status"] == "entered-in-error":
        raise _refuse("the study is entered-in-error and therefore read-only")


def check_transition(old: dict[str, Any], new: dict[str, Any]) -> None:
    """`new` is the whole study after the write; the table and the instance rule must hold."""
    before, after = old["status"], new["status"]
    if before != after and after not in TRANSITIONS[before]:
        allowed = ", ".join(sorted(TRANSITIONS[before])) or "none"
        raise _refuse(
            f"status cannot change from '{before}' to '{after}' (allowed from "
            f"'{before}': {allowed})"
        )
    check_instances(new)


def check_instances(study: dict[str, Any]) -> None:
    if study["status"] == _NEEDS_INSTANCE and count_instances(study) == 0:
        raise _refuse("an 'available' study must list at least one instance")


def check_can_grow(old: dict[str, Any]) -> None:
    """A cancelled study takes no new series or instances."""
    if old["status"] == "cancelled":
        raise _refuse("the study is cancelled and takes no new series or instances")
