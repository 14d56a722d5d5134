"""Private search keys kept beside the FHIR JSON in `_srv`, so every search parameter is one
indexed equality or range match. Computed on every write, stripped from every read.

- `_srv.k`: token and reference keys, `{p: parameter, c: code or reference, s: system}`
  (s absent for references), and the identifiers of references under `p: parameter:identifier`
  (the `:identifier` modifier); one compound multikey index serves them all.
- `_srv.started`, `_srv.lu`: `{lo, hi}` instant ranges of `started` and `meta.lastUpdated`.
- `_srv.sort`: sort keys that are always present (a study without `started` sorts last).
- `_srv.uid`: the Study Instance UID, under a unique index (absent on deleted studies)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from store.fhir import Study
from store.fhir.dates import date_range
from store.fhir.identity import study_uid
from store.fhir.references import reference_type

NO_DATE = datetime(1, 1, 1, tzinfo=UTC)  # the sort value of a missing `started`
# The form of the keys: raised whenever a write would store keys an older version did not
# (2: the `:identifier` keys of references), so store/mongo/rekey.py brings studies written
# before it up to date and the new searches find them too.
KEYS_VERSION = 2


def _codings(concept: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    yield from (concept or {}).get("coding") or ()


def _token(param: str, system: str | None, code: str | None) -> Iterator[dict[str, Any]]:
    if code is not None:
        yield {"p": param, "c": code, "s": system or ""}
    elif system is not None:
        yield {"p": param, "s": system}


def reference_key(reference: dict[str, Any] | None) -> str | None:
    """The searchable form of a literal reference: `Type/id` without a version for relative
    references, absolute URLs as written. Contained and identifier-only references have none."""
    literal = (reference or {}).get("reference")
    if not isinstance(literal, str) or literal.startswith("#"):
        return None
    if reference_type(literal) is not None and "://" not in literal:
        return "/".join(literal.split("/")[:2])
    return literal.split("/_history/")[0]


def _references(param: str, refs: Iterable[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
    for ref in refs:
        key = reference_key(ref)
        if key is not None:
            yield {"p": param, "c": key}


def _identifiers(param: str, refs: Iterable[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
    """Token keys of the `identifier` of each Reference, for `param:identifier`."""
    for ref in refs:
        identifier = (ref or {}).get("identifier")
        if isinstance(identifier, dict):
            yield from _token(
                f"{param}:identifier", identifier.get("system"), identifier.get("value")
            )


def _is_patient(reference: dict[str, Any] | None) -> bool:
    """Whether a Reference says it is to a Patient: by its `type`, else by the type its literal
    reference (relative or absolute) names. One given by identifier alone must say its type
    (store/fhir/references.py); one whose literal names no type (a urn:uuid) is not known to be
    a Patient."""
    ref = reference or {}
    if ref.get("type") is not None:
        return bool(ref["type"] == "Patient")
    literal = ref.get("reference")
    return isinstance(literal, str) and reference_type(literal) == "Patient"


def _keys(study: Study) -> Iterator[dict[str, Any]]:
    series = study.get("series") or []
    for identifier in study.get("identifier") or ():
        yield from _token("identifier", identifier.get("system"), identifier.get("value"))
    for item in series:
        for coding in _codings(item.get("modality")):
            yield from _token("modality", coding.get("system"), coding.get("code"))
        for coding in _codings((item.get("bodySite") or {}).get("concept")):
            yield from _token("body-site", coding.get("system"), coding.get("code"))
        for instance in item.get("instance") or ():
            sop = instance.get("sopClass") or {}
            yield from _token("dicom-class", sop.get("system"), sop.get("code"))
    for reason in study.get("reason") or ():
        for coding in _codings(reason.get("concept")):
            yield from _token("reason", coding.get("system"), coding.get("code"))
    yield from _references("reason", (r.get("reference") for r in study.get("reason") or ()))
    yield from _references("subject", [study.get("subject")])
    yield from _references("encounter", [study.get("encounter")])
    yield from _references("based-on", study.get("basedOn") or ())
    yield from _references("referrer", [study.get("referrer")])
    yield from _references("endpoint", study.get("endpoint") or ())
    for item in series:
        yield from _references("endpoint", item.get("endpoint") or ())
        yield from _references("body-structure", [(item.get("bodySite") or {}).get("reference")])
        yield from _references("performer", (p.get("actor") for p in item.get("performer") or ()))
        yield from _identifiers("performer", (p.get("actor") for p in item.get("performer") or ()))
    subject = study.get("subject")
    yield from _identifiers("subject", [subject])
    # R5's `patient` is subject.where(resolve() is Patient): with :identifier nothing is resolved,
    # so the Reference's own type (or literal reference) must say Patient.
    yield from _identifiers("patient", [subject] if _is_patient(subject) else [])
    yield from _identifiers("referrer", [study.get("referrer")])
    yield from _identifiers("based-on", study.get("basedOn") or ())


def _range(value: str) -> dict[str, datetime]:
    low, high = date_range(value)
    return {"lo": low, "hi": high}


def search_keys(study: Study) -> dict[str, Any]:
    """The `_srv` search payload of a study (its `meta.lastUpdated` must be set)."""
    unique = {tuple(sorted(k.items())): k for k in _keys(study)}
    payload: dict[str, Any] = {
        "kv": KEYS_VERSION,
        "k": list(unique.values()),
        "lu": _range(study["meta"]["lastUpdated"]),
    }
    started = study.get("started")
    if started:
        payload["started"] = _range(started)
    payload["sort"] = {
        "nostart": 0 if started else 1,
        "started": payload["started"]["lo"] if started else NO_DATE,
    }
    uid = study_uid(study)
    if uid is not None:  # the unique key: one live study per Study Instance UID
        payload["uid"] = uid
    return payload


def part_keys(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The token and reference keys that series (or instances, under a series stand-in) add:
    what an append adds to `_srv.k` in its update, in the form `search_keys` makes them."""
    unique = {tuple(sorted(k.items())): k for k in _keys({"series": series})}
    return list(unique.values())


def updated_range(last_updated: str) -> dict[str, datetime]:
    """The `_srv.lu` range of a `meta.lastUpdated` value."""
    return _range(last_updated)
