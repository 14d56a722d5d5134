"""DICOM UID syntax (PS3.5 section 9.1): components of digits separated by dots, no component
with a leading zero (a lone 0 is fine), at most 64 characters in all."""

from __future__ import annotations

import re

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
OID_PREFIX = "urn:oid:"


def uid_problem(value: object) -> str | None:
    """The DICOM rule `value` breaks, or None when it is a valid UID."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "a DICOM UID must not be empty"
    if len(value) > 64:
        return f"a DICOM UID is at most 64 characters (this one has {len(value)})"
    if not _UID.fullmatch(value):
        if any(part[:1] == "0" and len(part) > 1 for part in value.split(".")):
            return "a DICOM UID component must not start with a leading zero"
        return "a DICOM UID is digits separated by single dots"
    return None


def oid_uid_problem(value: object) -> str | None:
    """Checks a `urn:oid:<uid>` value, as used for Study Instance UIDs and SOP classes."""
    if not isinstance(value, str) or not value.startswith(OID_PREFIX):
        return f"must be '{OID_PREFIX}' followed by a DICOM UID"
    return uid_problem(value[len(OID_PREFIX) :])
