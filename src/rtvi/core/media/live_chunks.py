"""Live chunk planning: wall-clock windows, and which frames each window takes.

Windows
-------
The first frame of a connection anchors the grid: window ``i`` covers
``[origin + i * step, origin + i * step + duration)`` with ``step = duration - overlap`` (all in Unix
seconds). A disconnect (``reset``) drops the windows that cannot be completed honestly and re-anchors on
the first frame after the reconnect, so a chunk never spans an outage.

Frames
------
Each window has ``n`` targets, the centres of ``n`` equal sub-intervals (as for files), and takes the
frame **nearest** each target: when the first frame at or after a target arrives, the previous frame
wins if it is closer. A window is complete when a frame at or after its end arrives, so a chunk is
emitted about one frame interval after its end. The planner is pure (no decoding, no clocks): the live
reader feeds it ``(time, payload)`` pairs and converts only the payloads it picks.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .chunks import ChunkParams

P = TypeVar("P")  # what the reader feeds (a decoded frame)
F = TypeVar("F")  # what a pick becomes (an RGB array)


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
    def __init__(self, duration_s: float, overlap_s: float, n: int, pick: Callable[[P], F]) -> None:
        ChunkParams(duration_s, overlap_s).require_live()
        if n < 1:
            raise ValueError("a chunk needs at least one frame")
        self.duration_s = duration_s
        self.step_s = duration_s - overlap_s
        self.n = n
        self._pick_fn = pick
        self._origin: float | None = None
        self._next_index = 0  # window indices keep increasing across resets
        self._origin_index = 0  # the index of the window that starts at the origin
        self._open: dict[int, _Open[F]] = {}
        # Pending targets sorted by time: (time, window index, k).
        self._targets: list[tuple[float, int, int]] = []
        self._prev: tuple[float, P] | None = None
        # The last conversion, so a frame picked by several targets or windows is converted once.
        self._last_pick: tuple[P, F] | None = None
        self.windows_dropped = 0

    def reset(self) -> int:
        """A gap in the stream: drop the open windows and re-anchor on the next frame. -> windows dropped."""
        dropped = len(self._open)
        self.windows_dropped += dropped
        self._open.clear()
        self._targets.clear()
        self._origin = None
        self._origin_index = self._next_index
        self._prev = None
        self._last_pick = None
        return dropped

    def feed(self, t: float, payload: P) -> list[CompletedWindow[F]]:
        if self._origin is None:
            self._origin = t
        if self._prev is not None and t < self._prev[0]:
            t = self._prev[0]  # clocks may step back slightly (receive-time estimate -> sender reports)
        self._open_windows_until(t)
        while self._targets and self._targets[0][0] <= t:
            target, index, k = self._targets.pop(0)
            use_prev = self._prev is not None and target - self._prev[0] <= t - target
            when, chosen = self._prev if use_prev and self._prev is not None else (t, payload)
            slot = self._open[index]
            slot.frames[k] = self._pick(chosen)
            slot.times[k] = when
            slot.missing -= 1
        self._prev = (t, payload)
        done: list[CompletedWindow[F]] = []
        for index in sorted(self._open):
            slot = self._open[index]
            if slot.window.end_s > t or slot.missing > 0:
                break
            del self._open[index]
            done.append(CompletedWindow(slot.window, [f for f in slot.frames if f is not None], slot.times))
        return done

    def _open_windows_until(self, t: float) -> None:
        assert self._origin is not None
        while True:
            start = self._origin + (self._next_index - self._origin_index) * self.step_s
            if start > t:
                return
            window = LiveWindow(self._next_index, start, start + self.duration_s)
            self._open[window.index] = _Open(window, [None] * self.n, [0.0] * self.n, self.n)
            for k, target in enumerate(window.targets(self.n)):
                bisect.insort(self._targets, (target, window.index, k))
            self._next_index += 1

    def _pick(self, payload: P) -> F:
        if self._last_pick is not None and self._last_pick[0] is payload:
            return self._last_pick[1]
        value = self._pick_fn(payload)
        self._last_pick = (payload, value)
        return value
