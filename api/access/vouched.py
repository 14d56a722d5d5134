"""What a writer confined to one patient cannot vouch for.

Beside the subject's reference, a study may say who its patient is (an MRN in
`subject.identifier`, a name in `subject.display`), which orders it belongs to (an accession
number in `basedOn.identifier` or in the study's `identifier`, typed ACSN or not), and who
referred and performed it (`referrer.identifier`, `series.performer.actor.identifier`). The
worklists search these (`patient_identifier`, `based_on_identifier`, `identifier`,
`referrer_identifier`, `performer_identifier`), and nothing a patient's token carries vouches
for them: set by it, they would put its study in another patient's, order's or physician's
worklist. So a confined writer may keep them as the record's systems wrote them, and may
neither add nor change them; the Study Instance UID is the one identifier it may set (unique,
it cannot be another study's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from store.fhir import Study
from store.fhir.definitions import DICOM_UID_SYSTEM

Claim = tuple[str, str, Any]  # (kind, path, value)


def _claims(study: Study) -> Iterator[Claim]:
    subject = study.get("subject")
    if isinstance(subject, dict):
        for name in ("identifier", "display", "_display"):
            if name in subject:
                yield f"subject.{name}", f"subject.{name}", subject[name]
    for n, order in enumerate(study.get("basedOn") or ()):
        if isinstance(order, dict) and "identifier" in order:
            yield "basedOn", f"basedOn[{n}].identifier", order["identifier"]
    for n, identifier in enumerate(study.get("identifier") or ()):
        # Any but the Study Instance UID (unique, so it cannot be another study's): an
        # accession number is typed ACSN by some senders and by none at others.
        if isinstance(identifier, dict) and identifier.get("system") != DICOM_UID_SYSTEM:
            yield "identifier", f"identifier[{n}]", identifier
    referrer = study.get("referrer")
    if isinstance(referrer, dict) and "identifier" in referrer:
        yield "referrer", "referrer.identifier", referrer["identifier"]
    for s, series in enumerate(study.get("series") or ()):
        for p, performer in enumerate((series or {}).get("performer") or ()):
            actor = (performer or {}).get("actor")
            if isinstance(actor, dict) and "identifier" in actor:
                path = f"series[{s}].performer[{p}].actor.identifier"
                yield "performer", path, actor["identifier"]


def unvouched(resource: Study, stored: Study | None) -> str | None:
    """The path of the first such element `resource` sets that `stored` (the version it
    replaces, if any) does not already hold as it is; None when there is none."""
    kept = {(kind, _same(value)) for kind, _, value in _claims(stored)} if stored else set()
    for kind, path, value in _claims(resource):
        if (kind, _same(value)) not in kept:
            return path
    return None


def _same(value: Any) -> bytes:
    # Equal values, whatever the order of their keys.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
