"""Reference rules: the literal forms R5 allows and the target types each element permits."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_ID = r"[A-Za-z0-9\-.]{1,64}"
_TYPED = rf"(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(/_history/{_ID})?"
_RELATIVE = re.compile(_TYPED)
_ABSOLUTE = re.compile(rf"https?://[^\s/]+(/\S*)?/{_TYPED}")
_URN = re.compile(r"urn:(uuid|oid):\S+")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]+")


def reference_type(reference: str) -> str | None:
    """The resource type a relative or absolute literal reference names, if any."""
    match = _RELATIVE.fullmatch(reference) or _ABSOLUTE.fullmatch(reference)
    return match["type"] if match else None


def unversioned(reference: str) -> str:
    """A relative literal reference without its version (`Patient/p/_history/2` is
    `Patient/p`, as searches read it); any other reference as it is."""
    match = _RELATIVE.fullmatch(reference)
    return f"{match['type']}/{match['id']}" if match else reference


def reference_problems(
    ref: dict[str, Any], targets: tuple[str, ...], contained: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """Yields (sub-element, rule) for each way `ref` breaks the reference rules."""
    allowed = " | ".join(targets)
    literal, type_ = ref.get("reference"), ref.get("type")
    if all(ref.get(k) is None for k in ("reference", "identifier", "display", "extension")):
        # An extension alone carries e.g. a data-absent-reason: the target is unknown.
        yield (
            "",
            (
                "a Reference needs at least one of reference, identifier or display (or "
                "an extension such as data-absent-reason)"
            ),
        )
        return
    if isinstance(type_, str) and targets and type_ not in targets:
        yield ".type", f"'{type_}' is not an allowed target here; allowed: {allowed}"
    if isinstance(literal, str):
        yield from _literal_problems(literal, type_, targets, contained)
    elif ref.get("identifier") is not None and type_ is None and targets:
        yield ".type", f"a Reference given only by identifier must say its type ({allowed})"


def _literal_problems(
    literal: str, type_: Any, targets: tuple[str, ...], contained: dict[str, str]
) -> Iterator[tuple[str, str]]:
    if literal.startswith("#"):
        if literal[1:] not in contained:
            yield ".reference", f"'{literal}' names no contained resource of this study"
            return
        named: str | None = contained[literal[1:]]
    elif _URN.fullmatch(literal):
        return
    else:
        named = reference_type(literal)
    if named is None:
        yield (
            ".reference",
            (
                "must be a relative reference Type/id, an absolute URL ending in "
                "Type/id, urn:uuid:/urn:oid:, or #id of a contained resource"
            ),
        )
    elif targets and named not in targets:
        yield ".reference", (f"points at a {named}; allowed targets here: {' | '.join(targets)}")
    elif isinstance(type_, str) and type_ != named:
        yield ".type", f"says '{type_}' but the reference points at a {named}"


def is_resource_type(value: object) -> bool:
    return isinstance(value, str) and _RESOURCE_TYPE.fullmatch(value) is not None
