"""FileAudio: time windows of a file's sound as 16 kHz mono WAV, read one after another from one open
file, as a file request reads its chunks'."""

from __future__ import annotations

from pathlib import Path

from rtvi.core.media.audio import FileAudio
from tests.media_factory import loudest_hz, make_clip


def test_a_window_holds_exactly_its_seconds_of_sound(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "tone.mp4", seconds=3, fps=10, tone=lambda s: 300 + 100 * s)
    with FileAudio(clip) as audio:
        for start, hz in [(0, 300), (1, 400), (2, 500)]:
            wav = audio.window(start, start + 1)
            assert wav is not None
            assert loudest_hz(wav) == (hz, 1.0)


def test_windows_are_in_the_videos_time(tmp_path: Path) -> None:
    """Media times count from the video's first frame; here it comes 1 s into the file's clock, when
    the tone is already at 400 Hz."""
    clip = make_clip(tmp_path / "late.mp4", seconds=3, fps=10, start_s=1.0, tone=lambda s: 300 + 100 * s)
    with FileAudio(clip) as audio:
        for start, hz in [(0, 400), (1, 500)]:
            wav = audio.window(start, start + 1)
            assert wav is not None
            assert loudest_hz(wav) == (hz, 1.0)


def test_a_file_without_sound_has_none(tmp_path: Path) -> None:
    with FileAudio(make_clip(tmp_path / "silent.mp4", seconds=1, fps=10)) as audio:
        assert audio.window(0, 1) is None
