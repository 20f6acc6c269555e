"""Chunk time formats (spec §4.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def parse_iso(ts: str) -> datetime:
    return datetime.strptime(ts.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


def format_iso(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and Z, e.g. 2024-06-09T18:32:21.123Z."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_pts(seconds: float) -> str:
    """PTS seconds as a decimal string: "0.0", "10.0", "15.5" (millisecond precision)."""
    return str(round(float(seconds), 3))


def chunk_time(seconds: float, creation_time: str | None) -> str:
    if creation_time is None:
        return format_pts(seconds)
    return format_iso(parse_iso(creation_time) + timedelta(seconds=seconds))


def unix_to_iso(ts: float) -> str:
    return format_iso(datetime.fromtimestamp(ts, tz=UTC))


def normalize_iso(text: str) -> str:
    """A client's UTC timestamp (seconds or milliseconds, `Z` or `+00:00`) in the API's form,
    2024-06-09T18:32:11.000Z. ValueError when it is not a date and time."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return format_iso(dt)
