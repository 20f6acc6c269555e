"""Chunk time formats (spec §4.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class MediaClock:
    """How a request's chunk times read (spec §4.2): a live stream's chunk times are Unix seconds and read
    as wall clock; a file's are media seconds, read from its creation time when it has one, else as PTS."""

    live: bool
    creation_time: str | None = None
    # The wall-clock time (Unix seconds) of chunk time 0, when known: parsed once, read for every chunk.
    origin_ts: float | None = field(init=False)

    def __post_init__(self) -> None:
        origin = (
            0.0 if self.live else parse_iso(self.creation_time).timestamp() if self.creation_time else None
        )
        object.__setattr__(self, "origin_ts", origin)

    def time(self, seconds: float) -> str:
        return unix_to_iso(seconds) if self.live else chunk_time(seconds, self.creation_time)

    def media_info(self, start_s: float, end_s: float) -> dict[str, str | int]:
        """The API's media_info of a span: timestamps when they are known, else whole-second offsets."""
        if self.live or self.creation_time:
            return {
                "type": "timestamp",
                "start_timestamp": self.time(start_s),
                "end_timestamp": self.time(end_s),
            }
        return {"type": "offset", "start_offset": int(start_s), "end_offset": math.ceil(end_s)}
