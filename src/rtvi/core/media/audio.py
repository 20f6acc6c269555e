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

from .types import MediaError

RATE = 16_000
MAX_AUDIO_S = 600.0


def chunk_audio(path: Path, start_s: float, end_s: float) -> bytes | None:
    """WAV bytes of [start_s, end_s) of the file's first audio stream; None when it has none."""
    end_s = min(end_s, start_s + MAX_AUDIO_S)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if start_s > 0:
                container.seek(int(start_s * av.time_base), backward=True)
            resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=RATE)
            first = round(start_s * RATE)
            wanted = round((end_s - start_s) * RATE)
            parts: list[np.ndarray] = []
            have = 0
            position: int | None = None  # sample index (at RATE) of the next resampled sample
            for frame in container.decode(stream):
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
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot read the audio: {exc}") from exc
    pcm = np.concatenate(parts)[:wanted] if parts else np.zeros(0, dtype=np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()
