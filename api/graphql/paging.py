"""Paging arguments (`_count`, `_offset`): checked the same way at every level."""

from __future__ import annotations

from typing import Any, TypeVar

from store.fhir.outcome import BAD_USER_INPUT, fail

T = TypeVar("T")


def check_count(value: int | None, default: Any, cap: int, name: str = "_count") -> Any:
    """`value` when it lies in 1..cap, `default` when absent, else BAD_USER_INPUT."""
    if value is None:
        return default
    if not 1 <= value <= cap:
        raise fail(BAD_USER_INPUT, name, f"must be between 1 and {cap} (got {value})")
    return value


def check_offset(value: int | None) -> int:
    if value is not None and value < 0:
        raise fail(BAD_USER_INPUT, "_offset", f"must be 0 or more (got {value})")
    return value or 0


def page(items: list[T], count: int | None, offset: int | None, cap: int) -> list[T]:
    """One page of `items`; no `_count` means all of them from the offset on."""
    start = check_offset(offset)
    size = check_count(count, None, cap)
    return items[start:] if size is None else items[start : start + size]
