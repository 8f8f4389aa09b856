"""FHIR date/dateTime/instant text -> the half-open UTC range [low, high) its precision covers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fhir_dmp.errors import bad_request

_DATE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_date_range(text: str, name: str) -> tuple[datetime, datetime]:
    """Naive UTC bounds; a value without a zone is read as UTC (the server's zone)."""
    m = _DATE.match(text)
    if not m:
        raise bad_request(f"{name}: {text!r} is not a FHIR date, dateTime or instant", name)
    try:
        y = int(m["y"])
        if m["m"] is None:
            low = datetime(y, 1, 1)
            return low, (datetime(y + 1, 1, 1) if y < 9999 else datetime.max)
        mo = int(m["m"])
        if m["d"] is None:
            low = datetime(y, mo, 1)
            if mo == 12:
                return low, (datetime(y + 1, 1, 1) if y < 9999 else datetime.max)
            return low, datetime(y, mo + 1, 1)
        d = int(m["d"])
        if m["H"] is None:
            low = datetime(y, mo, d)
            return low, shift(low, timedelta(days=1))
        sec = int(m["S"] or 0)
        frac = m["f"] or ""
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        low = datetime(y, mo, d, int(m["H"]), int(m["M"]), sec, micro)
        if m["tz"] and m["tz"] != "Z":
            sign = 1 if m["tz"][0] == "+" else -1
            hh, mm = int(m["tz"][1:3]), int(m["tz"][4:6])
            low = shift(low, -sign * timedelta(hours=hh, minutes=mm))
        if m["S"] is None:
            step = timedelta(minutes=1)
        elif frac:
            step = timedelta(microseconds=max(1, 10 ** (6 - min(len(frac) - 1, 6))))
        else:
            step = timedelta(seconds=1)
        return low, shift(low, step)
    except ValueError as exc:
        raise bad_request(f"{name}: {text!r} is not a valid date ({exc})", name) from exc


def shift(moment: datetime, delta: timedelta) -> datetime:
    """moment + delta, saturating at the ends of the calendar (0001-01-01, 9999-12-31T23:59:59.999999):
    R4 dates go up to 9999-12-31 and a zone can move them past it, which Python cannot represent."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max if delta > timedelta(0) else datetime.min


def now_utc() -> datetime:
    """Naive UTC, millisecond precision: what the store keeps and meta.lastUpdated shows."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
