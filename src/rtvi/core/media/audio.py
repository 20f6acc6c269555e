"""A chunk's sound, for models that hear: 16 kHz mono 16-bit WAV of one time window of a file.

Resampled by FFmpeg (PyAV's AudioResampler) whatever the source's rate, layout and sample format. A
window longer than MAX_AUDIO_S keeps its first MAX_AUDIO_S seconds (bounded memory: 19 MB at most).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import av.audio.resampler
import numpy as np

from .probe import open_input, stream_origin_pts, video_stream
from .types import MediaError

RATE = 16_000
MAX_AUDIO_S = 600.0


class FileAudio:
    """A file's first audio stream, opened once (with the media layer's demuxer allowlist) for the windows
    of all its chunks. Times are the media layer's: seconds from the video stream's start."""

    def __init__(self, path: Path) -> None:
        self._container = open_input(path)
        try:
            self._stream = self._container.streams.audio[0] if self._container.streams.audio else None
            video = video_stream(self._container, path)  # the stream the sampler's times count from
            self._origin_s = float(stream_origin_pts(video) * video.time_base) if video.time_base else 0.0
        except BaseException:
            self._container.close()
            raise

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FileAudio:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def window(self, start_s: float, end_s: float) -> bytes | None:
        """WAV bytes of [start_s, end_s); None when the file has no sound."""
        if self._stream is None:
            return None
        end_s = min(end_s, start_s + MAX_AUDIO_S)
        try:
            pcm = self._pcm(self._origin_s + start_s, self._origin_s + end_s)
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot read the audio: {exc}") from exc
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            wav.writeframes(pcm.astype("<i2").tobytes())
        return buf.getvalue()

    def _pcm(self, start_s: float, end_s: float) -> np.ndarray:
        """16 kHz mono samples of [start_s, end_s) in the container's own time."""
        assert self._stream is not None
        # On the audio stream itself: a seek on the container lands on the video's keyframe, up to a GOP
        # of audio earlier (every audio packet is a keyframe).
        tb = self._stream.time_base
        self._container.seek(max(0, int(start_s / tb)) if tb else 0, stream=self._stream, backward=True)
        resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=RATE)
        first = round(start_s * RATE)
        wanted = round((end_s - start_s) * RATE)
        parts: list[np.ndarray] = []
        have = 0
        position: int | None = None  # sample index (at RATE) of the next resampled sample
        for frame in self._container.decode(self._stream):
            if position is None:
                position = round((frame.time or 0.0) * RATE)
            if frame.time is not None and frame.time >= end_s:
                break
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                skip = max(0, first - position)
                position += len(samples)
                if skip < len(samples):
                    parts.append(samples[skip:])
                    have += len(samples) - skip
            if have >= wanted:
                break
        return np.concatenate(parts)[:wanted] if parts else np.zeros(0, dtype=np.int16)
