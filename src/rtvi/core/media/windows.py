"""Live chunk planning: wall-clock windows, and which frames each window takes.

Windows
-------
The first keyframe of a connection anchors the grid (packets before it cannot be decoded): window ``i``
covers ``[origin + i * step, origin + i * step + duration)`` with ``step = duration - overlap`` (all in
Unix seconds). A disconnect (``reset``) drops the windows that cannot be completed honestly and
re-anchors on the first keyframe after the reconnect, so a chunk never spans an outage.

On the epoch grid (a cluster-run camera, whichever replica decodes it) window ``i`` covers
``[i * step, i * step + duration)`` since the Unix epoch. The first window of a connection is the grid
window its first keyframe falls in, cut to start at that keyframe: a camera that changes hands delivers
its first chunk when that window ends, not one to two windows later, with the same index any replica
gives it. No replica delivered that index before: the one that held the camera stopped (or died) before that
keyframe, so every window it delivered ended before it and started at least a window's duration earlier,
before this window's grid start. After a reset a window already opened (and dropped) is not opened again:
the grid resumes at the next one.

Frames
------
A window of ``n`` frames is cut into ``n`` equal parts; part ``k`` has its target at its centre (as for
files) and takes one frame from that part. Decoding every frame of every camera is what limits a live
machine (a 720p H.264 P-frame costs milliseconds, a stream has 30 a second), so the planner decodes only
what it takes:

* ``keyframe`` (the default): the keyframe nearest the target within its part, when the part has one;
  only that frame is decoded. The time error is at most half a part (``duration / n / 2``: 0.625 s for
  8 frames per 10 s) and is reported, since every chunk carries the true time of each frame. A part
  without a keyframe (a GOP longer than a part) falls back to ``exact``. When the stream's keyframes
  come at a regular interval (the last ``GOP_INTERVALS`` agree within ``GOP_TOLERANCE``), a keyframe is
  chosen the moment it arrives if the next one is due no nearer to the target: the frame's model work
  then starts up to half a part before the target instead of up to half a part after it, which is what
  lets sixteen aligned cameras finish a chunk's last frame before the chunk ends. Under a regular GOP
  the choice is the same as waiting would make; a keyframe that breaks the rhythm (a scene cut) may
  leave a nearer one unchosen, still within the part.
* ``exact``: the frame nearest the target; its GOP is decoded from the keyframe up to the target and
  no further (non-reference frames well before the target are skipped).

The planner is pure (no decoding, no clocks): the live reader tells it the time of every packet and
whether it is a keyframe, and gives it a ``FrameSource`` that decodes the frames it asks for. A window
is complete when its frames are chosen and the stream has reached its end.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from .chunks import ChunkParams

P = TypeVar("P")  # a decoded frame, as the source gives it
F = TypeVar("F")  # what a pick becomes (an RGB array)
P_co = TypeVar("P_co", covariant=True)

FramePick = Literal["keyframe", "exact"]
# A target is decided once packets this far past it have arrived: by then every frame near it (B-frames
# arrive after the later frames they refer to) is in the source.
SETTLE_S = 0.2
_MAX_KEYS = 512
# Keyframe intervals that agree within this share of the newest make a regular GOP (its next keyframe
# is predictable); this many of the newest intervals are compared.
GOP_TOLERANCE = 0.05
GOP_INTERVALS = 3


class FrameSource(Protocol[P_co]):
    """Decodes, on request, frames of the packets the reader has kept."""

    def keyframe(self, t: float) -> P_co | None:
        """The keyframe whose time is `t` (None when it is no longer kept)."""
        ...

    def nearest(self, t: float) -> tuple[float, P_co] | None:
        """The frame nearest `t` and its time (None when its packets are no longer kept)."""
        ...


@dataclass(frozen=True, slots=True)
class LiveWindow:
    index: int
    start_s: float
    end_s: float

    def targets(self, n: int) -> list[float]:
        width = (self.end_s - self.start_s) / n
        return [self.start_s + (k + 0.5) * width for k in range(n)]


@dataclass(slots=True)
class CompletedWindow(Generic[F]):
    window: LiveWindow
    frames: list[F]
    frame_times: list[float]


@dataclass(slots=True)
class _Open(Generic[F]):
    window: LiveWindow
    frames: list[F | None]
    times: list[float]
    missing: int = field(default=0)


class LiveChunkPlanner(Generic[P, F]):
    def __init__(
        self,
        duration_s: float,
        overlap_s: float,
        n: int,
        convert: Callable[[P], F],
        pick: FramePick = "keyframe",
        settle_s: float = SETTLE_S,
        epoch_grid: bool = False,
    ) -> None:
        ChunkParams(duration_s, overlap_s).require_live()
        if n < 1:
            raise ValueError("a chunk needs at least one frame")
        self.duration_s = duration_s
        self.step_s = duration_s - overlap_s
        self.n = n
        self.half_part_s = duration_s / n / 2
        self.pick = pick
        self.settle_s = settle_s
        # Windows on multiples of the step since the Unix epoch, numbered by that multiple: every replica
        # that runs a camera cuts and numbers its chunks alike (the same request_id:chunk_idx keys).
        self.epoch_grid = epoch_grid
        self._convert = convert
        self._origin: float | None = None
        self._since = float("-inf")  # the anchoring keyframe: no window starts before it
        self._now = float("-inf")
        self._next_index = 0  # window indices keep increasing across resets
        self._origin_index = 0  # the index of the window that starts at the origin
        self._open: dict[int, _Open[F]] = {}
        # Pending targets sorted by time: (time, window index, k).
        self._targets: list[tuple[float, int, int]] = []
        self._keys: list[float] = []  # recent keyframe times, ascending
        # The last conversion, so a frame picked by several targets or windows is converted once.
        self._last_pick: tuple[P, F] | None = None
        self.windows_dropped = 0

    def reset(self) -> int:
        """A gap in the stream: drop the open windows and re-anchor later. -> windows dropped."""
        dropped = len(self._open)
        self.windows_dropped += dropped
        self._open.clear()
        self._targets.clear()
        self._keys.clear()
        self._origin = None
        self._now = float("-inf")
        self._origin_index = self._next_index
        self._last_pick = None
        return dropped

    def earliest_target(self) -> float | None:
        """The earliest time whose frame may still be asked for (the source keeps packets from there)."""
        return self._targets[0][0] if self._targets else None

    def advance(self, t: float, key: bool, source: FrameSource[P]) -> list[CompletedWindow[F]]:
        """The stream has a packet at `t` (a keyframe when `key`). -> the windows this completes."""
        if self._origin is None:
            if not key:
                return []
            self._origin = self._since = t
            if self.epoch_grid:
                # The grid window this keyframe falls in, from the keyframe on (see the module docstring);
                # after a reset, a window already opened (and dropped) is not opened again.
                index = max(math.floor(t / self.step_s + 1e-9), self._next_index)
                self._origin = index * self.step_s
                self._origin_index = self._next_index = index
        now = self._now = max(self._now, t)  # packets come in decoding order; B-frames step back
        if key and (not self._keys or t > self._keys[-1]):
            self._keys.append(t)
            if len(self._keys) > _MAX_KEYS:
                del self._keys[: _MAX_KEYS // 2]
        self._open_windows_until(now)
        # Only the due targets are looked at (this runs for every packet): those the stream has reached
        # and, when a keyframe arrives, those whose part it may fall in (see _predictably_nearest).
        horizon = now + self.half_part_s if key and self.pick == "keyframe" else now
        due = bisect.bisect_right(self._targets, (horizon, math.inf, math.inf))
        self._targets[:due] = [t for t in self._targets[:due] if not self._decide(t, now, source)]
        done: list[CompletedWindow[F]] = []
        for index in sorted(self._open):
            slot = self._open[index]
            if slot.window.end_s > now or slot.missing > 0:
                break
            del self._open[index]
            frames = [f for f in slot.frames if f is not None]
            if not frames:  # every packet it needed was dropped (see FrameSource)
                self.windows_dropped += 1
                continue
            times = [tm for f, tm in zip(slot.frames, slot.times, strict=True) if f is not None]
            done.append(CompletedWindow(slot.window, frames, times))
        return done

    def _decide(self, target: tuple[float, int, int], now: float, source: FrameSource[P]) -> bool:
        """Choose the frame of one target if it can be chosen now. -> whether it was."""
        at, index, k = target
        chosen: tuple[float, P] | None = None
        exact_after = at + self.settle_s
        if self.pick == "keyframe":
            h = self.half_part_s
            i = bisect.bisect_left(self._keys, at)
            before = self._keys[i - 1] if i > 0 and self._keys[i - 1] >= at - h else None
            after = self._keys[i] if i < len(self._keys) and self._keys[i] < at + h else None
            if after is not None and (before is None or after - at < at - before):
                key_time: float | None = after
            elif before is not None and (
                after is not None or now >= at + (at - before) or self._predictably_nearest(before, at)
            ):
                key_time = before  # no keyframe that could still come is nearer
            else:
                key_time = None
            if key_time is not None:
                frame = source.keyframe(key_time)
                if frame is not None:
                    chosen = (key_time, frame)
                elif now < at:
                    return False  # chosen ahead of the stream but not decodable: the exact frame needs `at`
            elif now < max(at + h, exact_after):
                return False  # a keyframe may still come within the part
        elif now < exact_after:
            return False
        if chosen is None:
            chosen = source.nearest(at)
        slot = self._open[index]
        if chosen is not None:
            slot.frames[k] = self._pick(chosen[1])
            slot.times[k] = chosen[0]
        slot.missing -= 1
        return True

    def _predictably_nearest(self, key_time: float, at: float) -> bool:
        """Whether the newest keyframe stays the nearest to `at` because the next one, at the stream's
        regular GOP interval, is due no nearer (the earliest it may come counts)."""
        keys = self._keys
        if len(keys) <= GOP_INTERVALS or key_time != keys[-1]:
            return False
        gaps = [b - a for a, b in zip(keys[-GOP_INTERVALS - 1 : -1], keys[-GOP_INTERVALS:], strict=True)]
        gop = gaps[-1]
        if any(abs(g - gop) > GOP_TOLERANCE * gop for g in gaps):
            return False
        return key_time + gop * (1 - GOP_TOLERANCE) - at >= at - key_time

    def _open_windows_until(self, t: float) -> None:
        assert self._origin is not None
        while True:
            start = self._origin + (self._next_index - self._origin_index) * self.step_s
            if start > t:
                return
            window = LiveWindow(self._next_index, max(start, self._since), start + self.duration_s)
            self._open[window.index] = _Open(window, [None] * self.n, [0.0] * self.n, self.n)
            for k, target in enumerate(window.targets(self.n)):
                bisect.insort(self._targets, (target, window.index, k))
            self._next_index += 1

    def _pick(self, payload: P) -> F:
        if self._last_pick is not None and self._last_pick[0] is payload:
            return self._last_pick[1]
        value = self._convert(payload)
        self._last_pick = (payload, value)
        return value
