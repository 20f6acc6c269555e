"""The live chunk planner (wall-clock windows, nearest-frame sampling) and RTSP URL credentials."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import pytest

from rtvi.core.credentials import split_credentials, with_credentials
from rtvi.core.media.windows import FramePick, LiveChunkPlanner, LiveWindow


@dataclass
class Frames:
    """A FrameSource over frames numbered by their index in `times`; records what it had to decode."""

    times: list[float]
    keys: set[int]
    lost: bool = False
    decoded: list[str] = field(default_factory=list)
    seen: int = 0  # frames whose packets have arrived

    def keyframe(self, t: float) -> int | None:
        i = self.times.index(t)
        assert i in self.keys and i < self.seen
        self.decoded.append(f"key {i}")
        return None if self.lost else i

    def nearest(self, t: float) -> tuple[float, int] | None:
        arrived = self.times[: self.seen]
        j = bisect.bisect_left(arrived, t)
        assert j < len(arrived), "asked for a frame whose packets have not arrived"
        i = j - 1 if j > 0 and t - arrived[j - 1] <= arrived[j] - t else j
        self.decoded.append(f"exact {i}")
        return None if self.lost else (arrived[i], i)


def run(
    planner: LiveChunkPlanner[int, int], times: list[float], key_every: int = 1, lost: bool = False
) -> tuple[list[tuple[LiveWindow, list[int]]], Frames]:
    src = Frames(times, {i for i in range(len(times)) if i % key_every == 0}, lost)
    out = []
    for i, t in enumerate(times):
        src.seen = i + 1
        out += [(d.window, d.frames) for d in planner.advance(t, i in src.keys, src)]
    return out, src


def identity(x: int) -> int:
    return x


def planner(duration: float, overlap: float, n: int, pick: FramePick = "exact") -> LiveChunkPlanner[int, int]:
    return LiveChunkPlanner(duration, overlap, n, identity, pick)


def test_exact_windows_take_the_frame_nearest_each_target() -> None:
    # 10 fps from t=100: frame i at 100 + i/10. Targets of [100, 2) with n=4: 100.25, 100.75, 101.25, 101.75.
    times = [100 + i / 10 for i in range(61)]
    done, src = run(planner(2, 0, 4), times, key_every=10)
    assert [(w.start_s, w.end_s) for w, _ in done] == [(100, 102), (102, 104), (104, 106)]
    # 100.25 lies between frames 2 (100.2) and 3 (100.3); the earlier one wins a tie, the nearer otherwise.
    first = done[0][1]
    assert len(first) == 4 and first[0] in (2, 3) and first[1] in (7, 8) and first[3] in (17, 18)
    assert all(abs(times[f] - t) <= 0.05 + 1e-9 for f, t in zip(first, done[0][0].targets(4), strict=True))
    assert all(d.startswith("exact") for d in src.decoded)


def test_keyframe_pick_decodes_only_the_keyframe_nearest_each_target_within_its_part() -> None:
    # 30 fps, a keyframe every second (GOP 30); 10 s chunks of 8 frames: parts of 1.25 s.
    times = [i / 30 for i in range(30 * 21)]
    done, src = run(planner(10, 0, 8, "keyframe"), times, key_every=30)
    assert len(done) == 2
    for window, frames in done:
        assert len(frames) == 8 and all(f % 30 == 0 for f in frames)  # keyframes only
        for f, target in zip(frames, window.targets(8), strict=True):
            assert abs(times[f] - target) <= 10 / 8 / 2  # inside its own part
    # Only the chosen keyframes were decoded, each once per target.
    assert all(d.startswith("key") for d in src.decoded) and len(src.decoded) == 16
    assert done[0][1] == [1 * 30, 2 * 30, 3 * 30, 4 * 30, 6 * 30, 7 * 30, 8 * 30, 9 * 30]


def decode_times(times: list[float], keys: set[int]) -> tuple[dict[str, float], list[list[int]]]:
    """Keyframe-pick 10 s chunks of 8 frames. -> (stream time at which each decode was asked, frames)."""
    p = planner(10, 0, 8, "keyframe")
    src = Frames(times, keys)
    when: dict[str, float] = {}
    chunks = []
    for i, t in enumerate(times):
        src.seen = i + 1
        asked = len(src.decoded)
        chunks += [d.frames for d in p.advance(t, i in keys, src)]
        when.update((d, t) for d in src.decoded[asked:])
    return when, chunks


def test_a_regular_gop_has_each_keyframe_chosen_as_it_arrives() -> None:
    # GOP 1 s at 30 fps. Waiting for certainty, the keyframe at 9 s (target 9.375 s) would be chosen at
    # 9.75 s; once three equal intervals show the rhythm, the next keyframe is known to come at 10 s, so
    # 9 s is chosen on arrival, and its model work can end before the chunk does. Same choices.
    times = [i / 30 for i in range(30 * 11)]
    when, chunks = decode_times(times, {i for i in range(len(times)) if i % 30 == 0})
    assert chunks == [[1 * 30, 2 * 30, 3 * 30, 4 * 30, 6 * 30, 7 * 30, 8 * 30, 9 * 30]]
    assert when["key 270"] == 9.0 and when["key 120"] == 4.0 and when["key 90"] == 3.0


def test_a_keyframe_chosen_early_that_cannot_be_decoded_waits_for_the_exact_frame() -> None:
    # Every decode fails (lost): the exact frame is asked for only once its packets have arrived
    # (Frames.nearest asserts that), never for a target the stream has not reached.
    times = [i / 30 for i in range(30 * 11)]
    done, src = run(planner(10, 0, 8, "keyframe"), times, key_every=30, lost=True)
    assert done == [] and any(d.startswith("exact") for d in src.decoded)


def test_an_irregular_gop_waits_until_no_nearer_keyframe_can_come() -> None:
    keys = {0, 25, 45, 90, 120, 150, 165, 210, 240, 270, 300}  # intervals of 0.5 to 1.5 s
    times = [i / 30 for i in range(30 * 11)]
    when, chunks = decode_times(times, keys)
    assert chunks[0][-1] == 270
    assert when["key 270"] >= 9.75  # 9.375 + (9.375 - 9.0): a keyframe before then would be nearer


def test_keyframe_pick_falls_back_to_exact_when_a_part_has_no_keyframe() -> None:
    # A keyframe every 3 s; parts of 0.5 s: most parts have none and take the frame nearest their centre.
    times = [i / 10 for i in range(61)]
    done, src = run(planner(2, 0, 4, "keyframe"), times, key_every=30)
    _, frames = done[0]
    assert [times[f] for f in frames] == pytest.approx([0.0, 0.7, 1.2, 1.7])  # 0.25 -> the keyframe at 0
    assert src.decoded[:4] == ["key 0", "exact 7", "exact 12", "exact 17"]
    assert len(done) == 3


def test_a_window_is_emitted_once_the_stream_reaches_its_end() -> None:
    p = planner(1, 0, 2)
    src = Frames([0.0, 0.3, 0.9, 1.0], {0})
    results = []
    for i, t in enumerate(src.times):
        src.seen = i + 1
        results.append(p.advance(t, i == 0, src))
    assert results[:3] == [[], [], []]
    [done] = results[3]
    assert done.window == LiveWindow(0, 0.0, 1.0) and done.frames == [1, 2] and done.frame_times == [0.3, 0.9]


def test_overlap_makes_windows_step_by_duration_minus_overlap() -> None:
    times = [i / 30 for i in range(30 * 7)]
    done, _ = run(planner(4, 2, 8, "keyframe"), times, key_every=15)
    assert [(w.start_s, w.end_s) for w, _ in done] == [(0, 4), (2, 6)]
    assert all(len(frames) == 8 for _, frames in done)


def test_sparse_frames_repeat_and_are_converted_once() -> None:
    calls: list[int] = []

    def convert(x: int) -> int:
        calls.append(x)
        return x * 10

    p: LiveChunkPlanner[int, int] = LiveChunkPlanner(2, 0, 8, convert, "exact")
    done, _ = run(p, [0.0, 1.0, 2.0, 3.0])  # 1 fps: eight targets (0.125, 0.375, ...), few frames
    assert done[0][1] == [0, 0, 10, 10, 10, 10, 20, 20]
    assert calls == [0, 1, 2, 3]  # each once, also across windows


def test_the_grid_waits_for_a_keyframe_and_reset_reanchors_on_the_next_one() -> None:
    p = planner(2, 0, 4)
    times = [i / 10 for i in range(5, 36)]  # joined mid-GOP: frames before the keyframe at 1.0 are skipped
    done, _ = run(p, times, key_every=5)
    assert [w.start_s for w, _ in done] == [0.5]
    src = Frames([10.0 + i / 10 for i in range(31)], {0, 1, 2, 3})
    src.keys = {3}  # the camera comes back at 10.0, its first keyframe at 10.3
    assert p.reset() == 1 and p.windows_dropped == 1
    windows = []
    for i, t in enumerate(src.times):
        src.seen = i + 1
        windows += [d.window for d in p.advance(t, i in src.keys, src)]
    assert windows == [LiveWindow(2, 10.3, 12.3)]


def test_time_going_backwards_is_clamped() -> None:
    p = planner(1, 0, 2)
    src = Frames([0.0, 0.6, 0.4, 1.0], {0})
    got = []
    for i, t in enumerate(src.times):
        src.seen = i + 1
        got += p.advance(t, i == 0, src)
        assert p._now == max(src.times[: i + 1])  # the 0.4 packet does not move the clock back
    [done] = got
    assert done.frames[0] == 0 and done.window.end_s == 1.0


def test_a_window_whose_packets_were_dropped_is_not_emitted() -> None:
    p = planner(1, 0, 2)
    done, _ = run(p, [i / 10 for i in range(25)], lost=True)
    assert done == [] and p.windows_dropped == 2


@pytest.mark.parametrize(
    ("duration", "overlap", "n"), [(0, 0, 8), (-1, 0, 8), (2, 2, 8), (2, 3, 8), (2, 0, 0)]
)
def test_impossible_parameters_are_rejected(duration: float, overlap: float, n: int) -> None:
    with pytest.raises(ValueError):
        LiveChunkPlanner(duration, overlap, n, identity)


def test_credentials_move_out_of_the_url_and_back() -> None:
    url, user, password = split_credentials("rtsp://ad%40min:p%3Ass@cam.local:554/stream?x=1")
    assert (url, user, password) == ("rtsp://cam.local:554/stream?x=1", "ad@min", "p:ss")
    assert with_credentials(url, user, password) == "rtsp://ad%40min:p%3Ass@cam.local:554/stream?x=1"
    assert split_credentials("rtsp://cam.local/s") == ("rtsp://cam.local/s", "", "")
    assert with_credentials("rtsp://cam.local/s", "", "") == "rtsp://cam.local/s"


def test_an_epoch_grid_cuts_and_numbers_windows_alike_wherever_the_stream_is_joined() -> None:
    """Two replicas that join one camera at different moments (a take-over) cut the same windows with the
    same indices: multiples of the step since the Unix epoch. Each one's first window is the grid window
    its first keyframe falls in, from that keyframe on (the take-over delivers a chunk when it ends)."""
    base = 1_700_000_000.0  # a wall-clock time, a multiple of 2
    times = [base + 0.3 + i / 10 for i in range(80)]
    early, _ = run(LiveChunkPlanner(2, 0, 4, identity, "exact", epoch_grid=True), times, key_every=5)
    joined = times[25:]
    late, _ = run(LiveChunkPlanner(2, 0, 4, identity, "exact", epoch_grid=True), joined, key_every=5)
    first = int(base / 2)  # the stream starts at base + 0.3, in the window [base, base + 2)
    whole = [(first + k, base + 2 * k, base + 2 * k + 2) for k in range(4)]
    assert [(w.index, w.start_s, w.end_s) for w, _ in early] == [(first, base + 0.3, base + 2), *whole[1:]]
    # Joined at base + 2.8: the rest of window first + 1, then the same whole windows.
    assert [(w.index, w.start_s, w.end_s) for w, _ in late] == [(first + 1, joined[0], base + 4), *whole[2:]]
    assert [len(frames) for _, frames in late] == [4, 4, 4]
    # The cut window's frames lie in its own part of the stream.
    window, frames = late[0]
    assert all(window.start_s <= joined[f] < window.end_s for f in frames)


def test_an_epoch_grid_resumes_after_a_gap_without_opening_a_window_twice() -> None:
    base = 1_700_000_000.0
    p = LiveChunkPlanner(2, 0, 4, identity, "exact", epoch_grid=True)
    before = [base + 0.5 + i / 10 for i in range(20)]  # to base + 2.4: window first + 1 is open
    done, _ = run(p, before, key_every=5)
    assert [w.index for w, _ in done] == [int(base / 2)]
    p.reset()  # the camera drops; it is back at base + 3.0, inside the window dropped
    after = [base + 3.0 + i / 10 for i in range(52)]
    done, _ = run(p, after, key_every=5)
    assert [(w.index, w.start_s) for w, _ in done] == [
        (int(base / 2) + 2, base + 4),
        (int(base / 2) + 3, base + 6),
    ]
