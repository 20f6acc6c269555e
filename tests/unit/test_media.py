"""Media layer: probe, chunk planning, GOP-aware sampling, images. Real clips made with PyAV, no mocks."""

from __future__ import annotations

import contextlib
import os
import random
import wave
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from rtvi.core.media.chunks import plan_file_chunks, plan_image_chunk
from rtvi.core.media.probe import keyframe_index, probe
from rtvi.core.media.sampler import FileFrameSampler, chunk_targets, load_image
from rtvi.core.media.types import ChunkSpec, Frame, MediaError
from tests.media_factory import (
    CLIP_FORMATS,
    DECODED_CODEC,
    encoder_available,
    index_frame,
    make_clip,
    make_clip_from_images,
    make_image,
    read_index,
)

SIZE = (64, 48)  # sampler output (width, height) in most tests


# -- helpers ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> Callable[..., Path]:
    """make_clip, cached per module by file name (several tests share a clip)."""
    made: dict[str, Path] = {}

    def get(name: str, **kwargs: object) -> Path:
        if name not in made:
            codec = str(kwargs.get("codec", "libx264"))
            if not encoder_available(codec):
                pytest.skip(f"encoder {codec} not available in this PyAV build")
            made[name] = make_clip(clip_dir / name, **kwargs)
        return made[name]

    return get


def decode_all(path: Path, size: tuple[int, int] | None = SIZE) -> tuple[list[float], list[Frame]]:
    """Reference: decode every frame, no seeking; times relative to the stream start."""
    times: list[float] = []
    frames: list[Frame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        tb = float(stream.time_base)
        decoded: list[av.VideoFrame] = []
        for packet in container.demux(stream):
            with contextlib.suppress(av.InvalidDataError):  # the cut-off last packet of a truncated file
                decoded += packet.decode()
        for frame in decoded:
            assert frame.pts is not None
            times.append(round((frame.pts - origin) * tb, 6))
            if size is None:
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                frames.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"))
    return times, frames


def expected_picks(times: list[float], chunk: ChunkSpec, n: int) -> list[int]:
    """The documented rule, written independently: first frame >= t if before the chunk end, else the
    last frame at or before t (else the first after it)."""
    picks = []
    for t in chunk_targets(chunk, n):
        after = [i for i, ft in enumerate(times) if ft >= t]
        before = [i for i, ft in enumerate(times) if ft <= t]
        if after and (times[after[0]] < chunk.end_s or not before):
            picks.append(after[0])
        else:
            picks.append(before[-1])
    return picks


def sample_all(path: Path, chunks: list[ChunkSpec], n: int, size: tuple[int, int] | None = SIZE, **kw: bool):
    with FileFrameSampler(path, n, size, **kw) as sampler:
        out = list(sampler.sample(chunks))
    return out, sampler


def assert_matches_reference(path: Path, chunks: list[ChunkSpec], n: int, **kw: bool) -> list[list[int]]:
    """Sampler output equals the decode-everything reference, pixel for pixel; returns picked indices."""
    times, frames = decode_all(path)
    results, _ = sample_all(path, chunks, n, **kw)
    assert [r.chunk for r in results] == chunks
    picked = []
    for r in results:
        want = expected_picks(times, r.chunk, n)
        assert len(r.frames) == n
        assert r.frame_pts_s == [times[i] for i in want], r.chunk
        for got, i in zip(r.frames, want, strict=True):
            assert got.shape == (SIZE[1], SIZE[0], 3) and got.dtype == np.uint8
            assert np.array_equal(got, frames[i])
        picked.append(want)
    return picked


# -- factory --------------------------------------------------------------------------------------------


def test_index_frame_round_trip() -> None:
    for i in (0, 1, 5, 299, 4097, 65535):
        assert read_index(index_frame(i, 160, 120)) == i
        assert read_index(index_frame(i, 64, 48)) == i


# -- probe ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "codec"), CLIP_FORMATS, ids=[f"{s}-{c}" for s, c in CLIP_FORMATS])
def test_every_container_and_codec(clip: Callable[..., Path], suffix: str, codec: str) -> None:
    path = clip(f"fmt-{codec}.{suffix}", seconds=2.0, fps=30, codec=codec, gop=15)
    info = probe(path)
    assert info.kind == "video"
    assert info.codec == DECODED_CODEC[codec]
    assert info.container == {"mkv": "matroska"}.get(suffix, suffix)
    assert (info.width, info.height) == (160, 120)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.fps == pytest.approx(30.0)
    assert keyframe_index(path) == [0.0, 0.5, 1.0, 1.5]
    chunks = plan_file_chunks(info.duration_s, info.fps, 0.5, 0)
    picked = assert_matches_reference(path, chunks, 4)
    # Each chunk's frames are the ones the documented rule names, read back from the pictures.
    assert len(decode_all(path)[0]) == 60
    results, _ = sample_all(path, chunks, 4)
    assert [[read_index(f) for f in r.frames] for r in results] == picked


def test_image_files(tmp_path: Path) -> None:
    for fmt, codec, container in (("JPEG", "mjpeg", "jpeg"), ("PNG", "png", "png")):
        path = make_image(tmp_path / f"img.{fmt.lower()}", fmt, index=77)
        info = probe(path)
        assert (info.kind, info.codec, info.container) == ("image", codec, container)
        assert (info.width, info.height, info.duration_s, info.fps) == (160, 120, 0.0, 0.0)
        assert read_index(load_image(path)) == 77
        small = load_image(path, (32, 24))
        assert small.shape == (24, 32, 3) and small.dtype == np.uint8
    # A stored upload may have no extension: FFmpeg then probes the content.
    bare = make_image(tmp_path / "upload", "JPEG", index=5)
    assert probe(bare).kind == "image"


def test_image_exif_orientation(tmp_path: Path) -> None:
    path = make_image(tmp_path / "rotated.jpg", "JPEG", index=1234, exif_orientation=6)
    info = probe(path)
    assert (info.width, info.height) == (120, 160)  # as displayed
    img = load_image(path)
    assert img.shape == (160, 120, 3)
    assert read_index(np.rot90(img, k=1)) == 1234  # orientation 6 = shown rotated 90 degrees clockwise
    assert load_image(path, (60, 80)).shape == (80, 60, 3)


def _wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    return path


def test_non_media_is_rejected(tmp_path: Path, clip: Callable[..., Path]) -> None:
    full = clip("whole.mp4", seconds=2.0, fps=30).read_bytes()
    webm = clip("whole.webm", seconds=2.0, fps=30, codec="libvpx-vp9").read_bytes()
    cases = {
        "notes.txt": b"hello world\n" * 100,  # FFmpeg's tty demuxer opens text as "ANSI art" video
        "notes.mp4": b"this is not a video, just text pretending to be one\n" * 100,
        "random.bin": os.urandom(100_000),
        "empty.mp4": b"",
        "no_moov.mp4": full[: len(full) // 2],  # moov atom is at the end: cut off
        "head.webm": webm[:300],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name in [*cases, "audio.wav", "missing.mp4"]:
        path = _wav(tmp_path / name) if name == "audio.wav" else tmp_path / name
        with pytest.raises(MediaError) as err:
            probe(path)
        assert name in str(err.value)
        with pytest.raises(MediaError):
            FileFrameSampler(path, 8)
    with pytest.raises(MediaError, match="no video stream"):
        probe(tmp_path / "audio.wav")
    # Text opens as "ANSI art" video in FFmpeg's tty demuxer, which is not on our demuxer allowlist.
    with pytest.raises(MediaError, match="not a readable media file in a supported container"):
        probe(tmp_path / "notes.txt")
    with pytest.raises(MediaError):
        load_image(tmp_path / "notes.txt")


def test_truncated_mid_stream_still_probes_and_samples(tmp_path: Path, clip: Callable[..., Path]) -> None:
    for name, kwargs in (
        ("cut.mkv", {}),
        ("cut.mp4", {"muxer_options": {"movflags": "faststart"}}),  # index first, data cut
    ):
        whole = clip(f"whole-{name}", seconds=4.0, fps=30, gop=30, **kwargs)
        data = whole.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) * 6 // 10])
        info = probe(cut)
        times, _ = decode_all(cut)
        assert 0.5 < info.duration_s < 3.5
        # From packet timestamps: the cut-off last packet or two may still count, but nothing more.
        assert times[-1] < info.duration_s <= times[-1] + 0.15
        chunks = plan_file_chunks(info.duration_s, info.fps, 1.0, 0)
        assert_matches_reference(cut, chunks, 4)


def test_offset_start_and_vfr(clip: Callable[..., Path]) -> None:
    # A stream starting at 1 s: times are reported from the stream start.
    for name, extra in (("offset.mkv", {}), ("offset.ts", {"container": "mpegts"})):
        path = clip(name, seconds=3.0, fps=30, gop=15, start_s=1.0, **extra)
        info = probe(path)
        assert info.duration_s == pytest.approx(3.0, abs=0.05)
        assert keyframe_index(path)[:2] == [0.0, 0.5]
        # Overlapping chunks make the sampler go back; MPEG-TS seeks are imprecise and get verified.
        picked = assert_matches_reference(path, plan_file_chunks(info.duration_s, info.fps, 1.0, 0.5), 4)
        assert picked[0] == [4, 12, 19, 27]
    stamps = [0, 0.1, 0.15, 0.5, 0.52, 0.9, 1.4, 1.45, 1.9, 2.6]
    vfr = clip("vfr.mkv", fps=30, timestamps=stamps)
    chunks = plan_file_chunks(probe(vfr).duration_s, 30, 1.0, 0)
    picked = assert_matches_reference(vfr, chunks, 4)
    assert picked[0] == [2, 3, 5, 5]  # targets 0.125, 0.375, 0.625, 0.875


def test_raw_stream_without_timestamps(clip: Callable[..., Path]) -> None:
    path = clip("raw.h264", seconds=2.0, fps=30, container="h264")
    info = probe(path)
    assert (info.kind, info.container, info.codec) == ("video", "h264", "h264")
    assert info.duration_s > 0
    (result,), _ = sample_all(path, plan_file_chunks(info.duration_s, info.fps, 0, 0), 8)
    indices = [read_index(f) for f in result.frames]
    assert len(indices) == 8 and indices == sorted(indices)


def test_probe_is_fast(clip: Callable[..., Path]) -> None:
    import time

    path = clip("long.mp4", seconds=20.0, fps=30, gop=250)
    started = time.perf_counter()
    for _ in range(5):
        probe(path)
    assert (time.perf_counter() - started) / 5 < 0.25  # milliseconds in practice; lenient for CI noise


# -- chunk planning -------------------------------------------------------------------------------------


def spans(chunks: list[ChunkSpec]) -> list[tuple[float, float]]:
    return [(c.start_s, c.end_s) for c in chunks]


def test_plan_basic_and_last_flag() -> None:
    chunks = plan_file_chunks(35.0, 30, 10, 0)
    assert spans(chunks) == [(0, 10), (10, 20), (20, 30), (30, 35)]
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.is_last for c in chunks] == [False, False, False, True]
    assert spans(plan_file_chunks(30.0, 30, 10, 0)) == [(0, 10), (10, 20), (20, 30)]


def test_plan_tail_sliver() -> None:
    chunks = plan_file_chunks(30.02, 30, 10, 0)  # 0.02 s left < 2 frames: no 4th chunk
    assert spans(chunks) == [(0, 10), (10, 20), (20, 30)] and chunks[-1].is_last
    assert len(plan_file_chunks(30.1, 30, 10, 0)) == 4  # 0.1 s = 3 frames: a chunk of its own
    assert len(plan_file_chunks(30.02, 0, 10, 0)) == 4  # fps unknown: no sliver rule


def test_plan_overlap_and_gaps() -> None:
    assert spans(plan_file_chunks(35.0, 30, 10, 2)) == [(0, 10), (8, 18), (16, 26), (24, 34), (32, 35)]
    assert spans(plan_file_chunks(35.0, 30, 10, -5)) == [(0, 10), (15, 25), (30, 35)]
    gaps = plan_file_chunks(30.02, 30, 10, -5)  # the next start (30) leaves only a sliver: stop
    assert spans(gaps) == [(0, 10), (15, 25)] and gaps[-1].is_last
    steps = plan_file_chunks(1.0, 30, 0.3, 0.2)
    assert spans(steps)[:3] == [(0, 0.3), (0.1, 0.4), (0.2, 0.5)] and steps[-1].end_s == 1.0


def test_plan_offsets_and_whole_range() -> None:
    assert spans(plan_file_chunks(35.0, 30, 10, 0, start_offset=5, end_offset=25)) == [(5, 15), (15, 25)]
    assert spans(plan_file_chunks(35.0, 30, 10, 0, start_offset=5, end_offset=99)) == [
        (5, 15),
        (15, 25),
        (25, 35),
    ]
    (whole,) = plan_file_chunks(35.0, 30, 0, 0)
    assert (whole.start_s, whole.end_s, whole.is_last) == (0, 35, True)
    assert spans(plan_file_chunks(35.0, 30, 0, 7, start_offset=5, end_offset=25)) == [(5, 25)]
    image = plan_image_chunk()
    assert (image.index, image.start_s, image.end_s, image.is_last) == (0, 0.0, 0.0, True)


def test_plan_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="must be smaller than chunk_duration"):
        plan_file_chunks(35.0, 30, 10, 10)
    with pytest.raises(ValueError, match="must be smaller than chunk_duration"):
        plan_file_chunks(35.0, 30, 10, 12)
    with pytest.raises(ValueError, match="start_offset"):
        plan_file_chunks(35.0, 30, 10, 0, start_offset=35)
    with pytest.raises(ValueError, match="start_offset"):
        plan_file_chunks(35.0, 30, 10, 0, start_offset=20, end_offset=10)
    with pytest.raises(ValueError):
        plan_file_chunks(35.0, 30, -1, 0)


# -- sampler --------------------------------------------------------------------------------------------


def test_sampler_gop30_and_gop250_pick_the_same_frames(clip: Callable[..., Path]) -> None:
    long_gop = clip("gop250.mp4", seconds=10.0, fps=30, gop=250)
    short_gop = clip("gop30.mp4", seconds=10.0, fps=30, gop=30)
    chunks = plan_file_chunks(10.0, 30, 2, 0)
    picked_long = assert_matches_reference(long_gop, chunks, 8)
    picked_short = assert_matches_reference(short_gop, chunks, 8)
    assert picked_long == picked_short
    assert picked_long[0] == [4, 12, 19, 27, 34, 42, 49, 57]  # first frame at or after 0.125 + k * 0.25
    for path in (long_gop, short_gop):
        # The same frames with non-reference skipping off (every frame decoded) and with the full size.
        assert_matches_reference(path, chunks, 8, skip_nonref=False)
        results, _ = sample_all(path, chunks, 8, size=None)
        assert all(f.shape == (120, 160, 3) for r in results for f in r.frames)
        assert [[read_index(f) for f in r.frames] for r in results] == picked_long


def test_sampler_seeks_only_into_later_gops(clip: Callable[..., Path]) -> None:
    chunks = plan_file_chunks(10.0, 30, 5, 0)  # targets every 0.625 s
    _, long_gop = sample_all(clip("gop250.mp4", seconds=10.0, fps=30, gop=250), chunks, 8)
    assert long_gop.seeks == 1  # keyframes at 0 and 8.33 s: one jump, never backwards
    _, short_gop = sample_all(clip("gop30.mp4", seconds=10.0, fps=30, gop=30), chunks, 8)
    assert short_gop.seeks <= 9  # at most once per GOP (1 s) after the first
    assert short_gop.frames_decoded < 300
    sparse = [ChunkSpec(0, 0, 10, True)]  # 2 frames in 10 s of 1 s GOPs: jumps over most GOPs
    (result,), sampler = sample_all(clip("gop30.mp4"), sparse, 2)
    assert sampler.seeks == 2 and sampler.packets_sent < 80
    assert [read_index(f) for f in result.frames] == [75, 225]


def test_overlapping_chunks_go_back(clip: Callable[..., Path]) -> None:
    path = clip("gop30.mp4", seconds=10.0, fps=30, gop=30)
    chunks = plan_file_chunks(10.0, 30, 3, 1.5)
    assert_matches_reference(path, chunks, 8)
    # Out-of-order chunks work too (each is sampled independently of the previous position).
    shuffled = [chunks[3], chunks[0], chunks[5], chunks[1]]
    assert_matches_reference(path, shuffled, 8)


def test_short_chunks_repeat_frames(clip: Callable[..., Path]) -> None:
    path = clip("gop30.mp4", seconds=10.0, fps=30, gop=30)
    (tiny, end), _ = sample_all(path, [ChunkSpec(0, 0.0, 0.1), ChunkSpec(1, 9.5, 10.5, True)], 8)
    # Frames at 0, 1/30, 2/30, 3/30: targets 0.00625 + k * 0.0125; 0.1 is the chunk end, not inside it.
    assert [read_index(f) for f in tiny.frames] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert tiny.frames[0] is tiny.frames[1]  # a repeated frame is converted once
    # Past the end of the stream: the last frame, repeated.
    assert [read_index(f) for f in end.frames][-3:] == [299, 299, 299]
    assert len(end.frames) == 8
    # A zero-length chunk (start == end) still gets n frames: the frame on screen at that time.
    (point, between), _ = sample_all(path, [ChunkSpec(0, 5.0, 5.0), ChunkSpec(1, 5.01, 5.01, True)], 3)
    assert [read_index(f) for f in point.frames] == [150, 150, 150]
    assert [read_index(f) for f in between.frames] == [150, 150, 150]
    assert_matches_reference(path, [ChunkSpec(0, 5.01, 5.01), ChunkSpec(1, 5.0, 5.0, True)], 3)


def test_sampler_from_still_images(clip_dir: Path) -> None:
    red = np.zeros((96, 128, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((96, 128, 3), np.uint8)
    blue[..., 2] = 220
    path = make_clip_from_images(clip_dir / "stills.mp4", [red, blue], seconds_each=2, fps=10)
    info = probe(path)
    assert (info.width, info.height, info.duration_s) == (128, 96, pytest.approx(4.0, abs=0.05))
    results, _ = sample_all(path, plan_file_chunks(info.duration_s, info.fps, 2, 0), 4)
    means = [[f.reshape(-1, 3).mean(axis=0) for f in r.frames] for r in results]
    assert all(m[0] > 150 > m[2] for m in means[0])
    assert all(m[2] > 150 > m[0] for m in means[1])


def test_latency_cancel_and_close(clip: Callable[..., Path]) -> None:
    path = clip("gop30.mp4", seconds=10.0, fps=30, gop=30)
    sampler = FileFrameSampler(path, 8, SIZE)
    chunks = plan_file_chunks(10.0, 30, 1, 0)
    gen = sampler.sample(chunks)
    first = next(gen)
    assert first.decode_latency_s > 0 and first.chunk == chunks[0]
    sampler.close()  # the caller cancels: stop iterating, close
    sampler.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        next(gen)
    gen.close()
    with pytest.raises(ValueError):
        FileFrameSampler(path, 0)
    with FileFrameSampler(path, 2) as s:
        assert s.keyframes == [float(i) for i in range(10)]
    with pytest.raises(RuntimeError):
        next(s.sample(chunks))


RANDOM_CASES: list[tuple[str, dict[str, object]]] = [
    ("rand-h264.mp4", {"gop": 20}),
    ("rand-vp9.webm", {"gop": 40, "codec": "libvpx-vp9"}),
    ("rand-ts.ts", {"gop": 15, "container": "mpegts", "start_s": 2.0}),
    ("rand-hevc.mkv", {"gop": 25, "codec": "libx265"}),  # x265 uses open GOPs
    ("rand-av1.mkv", {"gop": 32, "codec": "libsvtav1"}),  # libdav1d: no NONREF skipping
    (
        "rand-vfr.mkv",
        {"gop": 12, "timestamps": [i / 100 for i in sorted(random.Random(1).sample(range(600), 90))]},
    ),
]


@pytest.mark.parametrize(("name", "kwargs"), RANDOM_CASES, ids=[name for name, _ in RANDOM_CASES])
def test_random_chunks_match_reference(
    clip: Callable[..., Path], name: str, kwargs: dict[str, object]
) -> None:
    """Random chunk lists (out of order, overlapping, zero-length, outside the video) against the
    decode-everything reference."""
    path = clip(name, seconds=6.0, fps=30, **kwargs)
    times, frames = decode_all(path)
    rng = random.Random(name)
    for _ in range(25):
        chunks = []
        for i in range(rng.randint(1, 5)):
            start = rng.uniform(-0.5, 6.5)
            length = rng.choice([0.0, rng.uniform(0, 0.2), rng.uniform(0, 3)])
            chunks.append(ChunkSpec(i, round(start, 3), round(start + length, 3)))
        n = rng.choice([1, 3, 8])
        results, _ = sample_all(path, chunks, n, skip_nonref=rng.random() < 0.8)
        for r in results:
            want = expected_picks(times, r.chunk, n)
            assert r.frame_pts_s == [times[i] for i in want], (chunks, r.chunk)
            assert all(np.array_equal(got, frames[i]) for got, i in zip(r.frames, want, strict=True))
