"""The live chunk planner (wall-clock windows, nearest-frame sampling) and RTSP URL credentials."""

from __future__ import annotations

import pytest

from rtvi.core.media.live import split_credentials, with_credentials
from rtvi.core.media.live_chunks import LiveChunkPlanner, LiveWindow


def run(planner: LiveChunkPlanner[int, int], times: list[float]) -> list[tuple[LiveWindow, list[int]]]:
    out = []
    for i, t in enumerate(times):
        out += [(d.window, d.frames) for d in planner.feed(t, i)]
    return out


def identity(x: int) -> int:
    return x


def test_contiguous_windows_take_the_frame_nearest_each_target() -> None:
    # 10 fps from t=100: frame i at 100 + i/10. Targets of [100, 2) with n=4: 100.25, 100.75, 101.25, 101.75.
    times = [100 + i / 10 for i in range(61)]
    done = run(LiveChunkPlanner(2, 0, 4, identity), times)
    assert [(w.start_s, w.end_s) for w, _ in done] == [(100, 102), (102, 104), (104, 106)]
    # 100.25 lies between frames 2 (100.2) and 3 (100.3); the earlier one wins a tie, the nearer otherwise.
    first = done[0][1]
    assert len(first) == 4 and first[0] in (2, 3) and first[1] in (7, 8) and first[3] in (17, 18)
    assert all(abs(times[f] - t) <= 0.05 + 1e-9 for f, t in zip(first, done[0][0].targets(4), strict=True))


def test_a_window_is_emitted_once_a_frame_reaches_its_end() -> None:
    planner = LiveChunkPlanner(1, 0, 2, identity)
    assert planner.feed(0.0, 0) == []
    assert planner.feed(0.9, 1) == []
    [done] = planner.feed(1.0, 2)
    assert done.window == LiveWindow(0, 0.0, 1.0) and done.frames == [0, 1]


def test_overlap_makes_windows_step_by_duration_minus_overlap() -> None:
    times = [i / 30 for i in range(30 * 7)]
    done = run(LiveChunkPlanner(4, 2, 8, identity), times)
    assert [(w.start_s, w.end_s) for w, _ in done] == [(0, 4), (2, 6)]
    assert all(len(frames) == 8 for _, frames in done)


def test_sparse_frames_repeat_and_are_converted_once() -> None:
    calls: list[int] = []

    def convert(x: int) -> int:
        calls.append(x)
        return x * 10

    planner: LiveChunkPlanner[int, int] = LiveChunkPlanner(2, 0, 8, convert)
    done = run(planner, [0.0, 1.0, 2.0])  # 1 fps: eight targets (0.125, 0.375, ...), three frames
    assert done[0][1] == [0, 0, 10, 10, 10, 10, 20, 20]
    assert calls == [0, 1, 2]


def test_reset_drops_open_windows_and_reanchors_on_the_next_frame() -> None:
    planner = LiveChunkPlanner(2, 0, 4, identity)
    done = run(planner, [i / 10 for i in range(31)])  # one window done, the second open
    assert [w.index for w, _ in done] == [0]
    assert planner.reset() == 1 and planner.windows_dropped == 1
    # The camera comes back 7.05 s later: the next window starts at the first new frame, not on the old grid.
    later = [10.05 + i / 10 for i in range(21)]
    done = []
    for i, t in enumerate(later):
        done += [d.window for d in planner.feed(t, 100 + i)]
    assert done == [LiveWindow(2, 10.05, 12.05)]


def test_time_going_backwards_is_clamped() -> None:
    planner = LiveChunkPlanner(1, 0, 2, identity)
    planner.feed(0.0, 0)
    planner.feed(0.6, 1)
    assert planner.feed(0.4, 2) == []  # treated as 0.6
    [done] = planner.feed(1.0, 3)
    assert done.frames == [0, 2]  # target 0.75: frame 2 (at 0.6 after clamping) is nearest


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
