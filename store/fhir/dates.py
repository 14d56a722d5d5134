"""FHIR dates as instant ranges. A partial dateTime stands for every instant it could mean:
`2024` is the whole year, `2024-03-05T10:00:00+01:00` one second. Ranges are half-open
[low, high) in UTC, at millisecond precision (what MongoDB dates hold), within the instants a
Python datetime can hold: a range that runs past the end of 9999 is cut at LAST; a value that
starts outside [FIRST, LAST) (`0001-01-01T00:00:00+01:00` is in year 0 UTC) is refused."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone

_VALUE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
MS = timedelta(milliseconds=1)
FIRST = datetime.min.replace(tzinfo=UTC)
# The end of the last millisecond range MongoDB can hold a Python datetime for; exclusive.
LAST = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)


class DateError(ValueError):
    """A value that is not a FHIR date, dateTime or instant."""


def _zone(tz: str | None) -> timezone:
    if tz is None or tz == "Z":
        return UTC
    sign = 1 if tz[0] == "+" else -1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        raise DateError(f"time zone offset {tz} is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def date_range(value: str) -> tuple[datetime, datetime]:
    """The instants [low, high) a FHIR date/dateTime/instant covers. A value without a time
    zone is taken as UTC (the server's zone), as FHIR leaves that to the server."""
    match = _VALUE.fullmatch(value)
    if match is None:
        raise DateError(
            f"'{value}' is not a FHIR date or dateTime (YYYY, YYYY-MM, "
            "YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm])"
        )
    year = int(match["y"])
    try:
        if match["mo"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            return low, low.replace(year=year + 1) if year < 9999 else LAST
        month = int(match["mo"])
        if match["d"] is None:
            low = datetime(year, month, 1, tzinfo=UTC)
            return low, shift(low, timedelta(days=calendar.monthrange(year, month)[1]))
        day = int(match["d"])
        if match["h"] is None:
            low = datetime(year, month, day, tzinfo=UTC)
            return low, shift(low, timedelta(days=1))
        zone = _zone(match["tz"])
        second = min(int(match["s"] or 0), 59)  # a leap second counts as :59
        low = datetime(year, month, day, int(match["h"]), int(match["mi"]), second, tzinfo=zone)
    except ValueError as error:
        raise DateError(f"'{value}' is not a calendar date or time: {error}") from None
    if match["s"] is None:
        step = timedelta(minutes=1)
    elif match["f"] is None:
        step = timedelta(seconds=1)
    else:
        digits = match["f"]
        fraction = timedelta(microseconds=int(digits[:6].ljust(6, "0")))
        low += fraction - timedelta(microseconds=fraction.microseconds % 1000)
        step = MS if len(digits) >= 3 else timedelta(milliseconds=10 ** (3 - len(digits)))
    try:
        low = low.astimezone(UTC)
    except OverflowError:
        low = LAST  # refused just below
    if low >= LAST:
        raise DateError(
            f"'{value}' is outside the instants the server stores "
            "(0001-01-01T00:00:00Z up to 9999-12-31T23:59:59.999Z)"
        )
    return low, shift(low, step)


def shift(instant: datetime, by: timedelta) -> datetime:
    """`instant + by`, stopped at FIRST or LAST rather than overflowing: a range at the edge
    of the calendar keeps every instant that can be stored."""
    try:
        return min(instant + by, LAST)
    except OverflowError:
        return LAST if by > timedelta(0) else FIRST
