"""R5 primitive type checks (hl7.org/fhir/R5/datatypes.html#primitive). Each returns the rule a
value breaks in plain words, or None when it is valid."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

from store.fhir.dates import DateError, date_range

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODE = re.compile(r"[^\s]+( [^\s]+)*")
_URI = re.compile(r"\S*")
_DATETIME = re.compile(
    r"(?P<y>[0-9]{4})(-(?P<m>0[1-9]|1[0-2])(-(?P<d>0[1-9]|[12][0-9]|3[01])"
    r"(T(?P<time>[01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
    r"(?P<tz>Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?"
)
_INSTANT = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
MAX_STRING = 1024 * 1024


def _string(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty or only white space"
    if len(value) > MAX_STRING:
        return "must be at most 1 MiB"
    if "\x00" in value:
        return "must not contain NUL characters"
    return None


def _pattern(regex: re.Pattern[str], rule: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        return None if regex.fullmatch(value) else rule

    return check


def _datetime(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    match = _DATETIME.fullmatch(value)
    if not match:
        return (
            "must be a FHIR dateTime: YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDThh:mm:ss[.f] with a time zone offset (Z or +hh:mm)"
        )
    if match["time"] is not None and match["tz"] is None:
        return "a dateTime with a time must carry a time zone offset (Z or +hh:mm)"
    if match["d"]:
        try:
            date(int(match["y"]), int(match["m"]), int(match["d"]))
        except ValueError:
            return "is not a calendar date"
    try:
        date_range(value)  # what the search keys are made of: year 0, or past 9999 in UTC
    except DateError as error:
        return str(error)
    return None


def _unsigned(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    if value < 0:
        return "must be 0 or more (unsignedInt)"
    return None if value < 2**31 else "must be below 2^31 (unsignedInt)"


def _positive(value: object) -> str | None:
    problem = _unsigned(value)
    return problem or (None if value else "must be 1 or more (positiveInt)")


def _integer(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    return None if -(2**31) <= value < 2**31 else "must fit in 32 bits (integer)"


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _decimal(value: object) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else "must be a number"


def _xhtml(value: object) -> str | None:
    problem = _string(value)
    if problem:
        return problem
    assert isinstance(value, str)
    return None if value.lstrip().startswith("<div") else "must be an XHTML <div> element"


CHECKS: dict[str, Callable[[object], str | None]] = {
    "string": _string,
    "markdown": _string,
    "id": _pattern(_ID, "must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.' (FHIR id)"),
    "code": _pattern(_CODE, "must be a FHIR code: no leading, trailing or double white space"),
    "uri": _pattern(_URI, "must be a URI without white space"),
    "url": _pattern(_URI, "must be a URL without white space"),
    "canonical": _pattern(_URI, "must be a canonical URL without white space"),
    "oid": _pattern(re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"), "must be urn:oid:<OID>"),
    "uuid": _pattern(
        re.compile(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"),
        "must be urn:uuid:<lower-case UUID>",
    ),
    "dateTime": _datetime,
    "date": _pattern(
        re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?"),
        "must be a FHIR date: YYYY, YYYY-MM or YYYY-MM-DD",
    ),
    "time": _pattern(
        re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"),
        "must be a FHIR time hh:mm:ss",
    ),
    "instant": _pattern(_INSTANT, "must be a FHIR instant: a full date and time with offset"),
    "unsignedInt": _unsigned,
    "positiveInt": _positive,
    "integer": _integer,
    "integer64": _pattern(re.compile(r"-?[0-9]{1,19}"), "must be a 64-bit integer as a string"),
    "boolean": _boolean,
    "decimal": _decimal,
    "base64Binary": _pattern(re.compile(r"[A-Za-z0-9+/=\s]*"), "must be base64"),
    "xhtml": _xhtml,
}


def language_problem(value: object) -> str | None:
    """`language` is bound (required) to BCP 47 tags; we check the tag syntax."""
    problem = CHECKS["code"](value)
    if problem:
        return problem
    assert isinstance(value, str)
    return None if _LANGUAGE.fullmatch(value) else "must be a BCP 47 language tag such as en-US"
