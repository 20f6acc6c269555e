"""Build real media files with PyAV for tests and benchmarks (no fixtures on disk, no mocks).

The default picture of frame ``i`` encodes ``i`` as a 4x4 grid of black/white blocks
(:func:`index_frame`); :func:`read_index` reads it back from a decoded (and possibly resized) frame,
so a test can tell exactly which source frame a sampler returned, whatever the codec.
"""

from __future__ import annotations

import io
import itertools
import os
import wave
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

# SVT-AV1 prints a banner per encoder at "info" level; errors only.
os.environ.setdefault("SVT_LOG", "1")

Frame = npt.NDArray[np.uint8]
FrameSource = Callable[[int], Frame]

# (container suffix, encoder): the container/codec pairs the media layer must read.
CLIP_FORMATS: list[tuple[str, str]] = [
    ("mp4", "libx264"),
    ("mkv", "libx265"),
    ("mov", "libx264"),
    ("webm", "libvpx"),
    ("webm", "libvpx-vp9"),
    ("mkv", "libsvtav1"),
    ("mp4", "libaom-av1"),
]

# Encoder -> codec name a decoder reports for it.
DECODED_CODEC = {
    "libx264": "h264",
    "libx265": "hevc",
    "libvpx": "vp8",
    "libvpx-vp9": "vp9",
    "libsvtav1": "av1",
    "libaom-av1": "av1",
    "mpeg4": "mpeg4",
}

_GRID = 4  # 4x4 blocks -> 16 bits of frame index


def encoder_available(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # av raises UnknownCodecError / ValueError depending on the name
        return False
    return True


def index_frame(i: int, width: int, height: int) -> Frame:
    """A frame whose picture encodes ``i`` (0 <= i < 65536) as black/white blocks."""
    if not 0 <= i < 1 << (_GRID * _GRID):
        raise ValueError(f"frame index {i} out of range")
    bits = np.array([(i >> b) & 1 for b in range(_GRID * _GRID)], dtype=np.uint8).reshape(_GRID, _GRID)
    ys = np.minimum(np.arange(height) * _GRID // height, _GRID - 1)
    xs = np.minimum(np.arange(width) * _GRID // width, _GRID - 1)
    plane = bits[ys[:, None], xs[None, :]] * 255
    return np.repeat(plane[:, :, None], 3, axis=2).astype(np.uint8)


def read_index(frame: Frame) -> int:
    """Inverse of :func:`index_frame` for a decoded frame of any size (reads each block's centre)."""
    h, w = frame.shape[:2]
    grey = frame.astype(np.float32).mean(axis=2)
    value = 0
    for b in range(_GRID * _GRID):
        r, c = divmod(b, _GRID)
        y0, y1 = (4 * r + 1) * h // (4 * _GRID), (4 * r + 3) * h // (4 * _GRID)
        x0, x1 = (4 * c + 1) * w // (4 * _GRID), (4 * c + 3) * w // (4 * _GRID)
        if grey[y0:y1, x0:x1].mean() > 128:
            value |= 1 << b
    return value


def stills(images: Sequence[Frame | Image.Image], frames_each: int, width: int, height: int) -> FrameSource:
    """A frame source showing each image for ``frames_each`` frames, resized to width x height."""
    resized = [
        np.asarray(
            (img if isinstance(img, Image.Image) else Image.fromarray(img))
            .convert("RGB")
            .resize((width, height), Image.Resampling.BILINEAR),
            dtype=np.uint8,
        )
        for img in images
    ]

    def source(i: int) -> Frame:
        return resized[min(i // frames_each, len(resized) - 1)]

    return source


def textured_source(width: int, height: int, seed: int = 0) -> FrameSource:
    """Moving, textured content that compresses like camera video (pans, a moving object, grain).

    A static low-frequency texture larger than the frame is panned (motion compensation finds it), a
    bright disc moves across it, and light per-frame grain keeps residuals non-zero.
    """
    rng = np.random.default_rng(seed)
    big_w, big_h = width * 2, height * 2
    coarse = rng.integers(0, 256, size=(big_h // 16, big_w // 16, 3), dtype=np.uint8)
    fine = rng.integers(0, 256, size=(big_h // 4, big_w // 4, 3), dtype=np.uint8)
    base = (
        np.asarray(Image.fromarray(coarse).resize((big_w, big_h), Image.Resampling.BICUBIC), np.float32) * 0.7
        + np.asarray(Image.fromarray(fine).resize((big_w, big_h), Image.Resampling.BILINEAR), np.float32)
        * 0.3
    ).astype(np.uint8)
    grain = rng.integers(-6, 7, size=(8, height, width, 3), dtype=np.int16)
    yy, xx = np.mgrid[0:height, 0:width]

    def source(i: int) -> Frame:
        # Pan along a slow Lissajous path so the window never leaves the texture.
        x0 = int((np.sin(i / 97.0) * 0.5 + 0.5) * (big_w - width))
        y0 = int((np.cos(i / 131.0) * 0.5 + 0.5) * (big_h - height))
        img = base[y0 : y0 + height, x0 : x0 + width].astype(np.int16) + grain[i % len(grain)]
        cx = (i * 7) % width
        cy = height // 2 + int(np.sin(i / 15.0) * height / 4)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (height // 10) ** 2
        img[disc] = (240, 220, 40)
        return np.clip(img, 0, 255).astype(np.uint8)

    return source


def _encoder_options(codec: str, gop: int | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if codec == "libx264":
        opts["preset"] = "fast"
        if gop:
            opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    elif codec == "libx265":
        opts["preset"] = "ultrafast"
        params = "log-level=error"
        if gop:
            params += f":keyint={gop}:min-keyint={gop}:scenecut=0"
        opts["x265-params"] = params
    elif codec in ("libvpx", "libvpx-vp9"):
        opts.update({"deadline": "realtime", "cpu-used": "8"})
        if gop:
            opts["keyint_min"] = str(gop)
    elif codec == "libsvtav1":
        opts["preset"] = "12"
        if gop:
            opts["svtav1-params"] = f"keyint={gop}"
    elif codec == "libaom-av1":
        opts.update({"cpu-used": "8", "usage": "realtime"})
    return opts


def make_clip(
    path: Path,
    seconds: float = 2.0,
    fps: int = 30,
    width: int = 160,
    height: int = 120,
    codec: str = "libx264",
    container: str | None = None,
    gop: int | None = None,
    frames: FrameSource | None = None,
    *,
    timestamps: Sequence[float] | None = None,
    start_s: float = 0.0,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
    muxer_options: dict[str, str] | None = None,
    tone: Callable[[float], float] | None = None,
) -> Path:
    """Encode a clip and return its path.

    ``frames(i)`` gives the RGB picture of frame ``i`` (default: :func:`index_frame`). Frames are at
    ``i / fps`` seconds, or at ``timestamps[i]`` (variable frame rate) when given; ``start_s`` shifts all
    timestamps (a stream that does not start at 0). ``container`` defaults to the file suffix.
    ``gop`` fixes the keyframe interval in frames. ``options`` go to the encoder, ``muxer_options`` to the
    container (e.g. ``{"movflags": "faststart"}`` puts an MP4's index first). ``tone(t)``, when given,
    adds a mono AAC track: a sine whose frequency (Hz) at second ``t`` is ``tone(t)``.
    """
    path = Path(path)
    source = frames or (lambda i: index_frame(i, width, height))
    times = (
        list(timestamps) if timestamps is not None else [i / fps for i in range(max(1, round(seconds * fps)))]
    )
    # A millisecond time base when times are not multiples of 1/fps (VFR or an offset start).
    exact = timestamps is None and start_s == 0.0
    time_base = Fraction(1, fps) if exact else Fraction(1, 1000)
    ticks = [round((t + start_s) / time_base) for t in times]
    if any(b <= a for a, b in itertools.pairwise(ticks)):
        raise ValueError("timestamps must increase by at least 1 ms")
    fmt = container or {"mkv": "matroska"}.get(path.suffix.lstrip("."), path.suffix.lstrip("."))
    with av.open(str(path), "w", format=fmt, options=muxer_options or {}) as out:
        stream = out.add_stream(codec, rate=fps, options={**_encoder_options(codec, gop), **(options or {})})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        if gop:
            stream.codec_context.gop_size = gop
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        audio = out.add_stream("aac", rate=_TONE_RATE, layout="mono") if tone is not None else None
        for i, tick in enumerate(ticks):
            frame = av.VideoFrame.from_ndarray(source(i), format="rgb24")
            frame.pts = tick
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio is not None and tone is not None:
            _encode_tone(out, audio, tone, times[-1] + 1 / fps)
    return path


_TONE_RATE = 48_000


def _encode_tone(
    out: av.container.OutputContainer, audio: av.AudioStream, tone: Callable[[float], float], seconds: float
) -> None:
    size = 1024
    seconds_of = np.floor(np.arange(int(seconds * _TONE_RATE)) / _TONE_RATE)
    hz = np.vectorize(tone)(seconds_of)
    samples = (0.5 * np.sin(2 * np.pi * np.cumsum(hz) / _TONE_RATE)).astype(np.float32)
    for i, start in enumerate(range(0, len(samples), size)):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + size], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = _TONE_RATE, i * size
        out.mux(audio.encode(frame))
    out.mux(audio.encode(None))


def make_clip_from_images(
    path: Path,
    images: Sequence[Frame | Image.Image],
    seconds_each: float,
    fps: int = 30,
    width: int | None = None,
    height: int | None = None,
    codec: str = "libx264",
    gop: int | None = None,
) -> Path:
    """A clip showing each still image in turn for ``seconds_each`` (e.g. a cat photo, then a rocket).

    The size defaults to the first image's, rounded down to even numbers (yuv420p needs even sizes).
    """
    first = images[0] if isinstance(images[0], Image.Image) else Image.fromarray(images[0])
    w = (width or first.width) // 2 * 2
    h = (height or first.height) // 2 * 2
    per = max(1, round(seconds_each * fps))
    return make_clip(
        path,
        seconds=per * len(images) / fps,
        fps=fps,
        width=w,
        height=h,
        codec=codec,
        gop=gop,
        frames=stills(images, per, w, h),
    )


def make_image(
    path: Path,
    fmt: str = "JPEG",
    width: int = 160,
    height: int = 120,
    index: int = 0,
    exif_orientation: int | None = None,
    picture: Frame | None = None,
) -> Path:
    """Write a still image (``fmt``: a PIL format name such as JPEG or PNG).

    The picture is :func:`index_frame` of ``index`` unless ``picture`` is given; ``exif_orientation``
    (1-8) stores an EXIF Orientation tag so readers must rotate it.
    """
    img = Image.fromarray(picture if picture is not None else index_frame(index, width, height))
    kwargs: dict[str, object] = {}
    if fmt.upper() == "JPEG":
        kwargs["quality"] = 95
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def loudest_hz(wav_bytes: bytes) -> tuple[float, float]:
    """-> (the loudest frequency, seconds of sound)."""
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()]), len(samples) / 16000


def scene_photos() -> dict[str, Frame]:
    """Real photos (scikit-image sample data) for retrieval tests and benches: three people scenes and
    three without people. scikit-image ships no group photo, so the people scenes with several persons
    are generated from its two portraits (the astronaut and the cameraman) at half size, in a 512x512
    frame: "two people" side by side on a grey band, "four people" in a 2x2 grid (two mirrored)."""
    from skimage import data

    astronaut = data.astronaut()
    camera = np.stack([data.camera()] * 3, axis=-1)
    small_a, small_c = (np.asarray(Image.fromarray(p).resize((256, 256))) for p in (astronaut, camera))
    grey = np.full((128, 512, 3), 200, dtype=np.uint8)
    return {
        "astronaut": astronaut,
        "camera": camera,
        "two people": np.concatenate([grey, np.concatenate([small_a, small_c], axis=1), grey]),
        "four people": np.concatenate(
            [np.concatenate([small_a, small_c], axis=1), np.concatenate([small_a, small_c], axis=1)[:, ::-1]]
        ),
        "cat": data.chelsea(),
        "rocket": data.rocket(),
        "coffee": data.coffee(),
    }
