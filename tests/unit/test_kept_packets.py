"""KeptPackets: the live reader's store of compressed GOPs, decoding only the frames asked for (real H.264
with B-frames, frames that encode their own index)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from rtvi.core.media.rtsp import KeptPackets
from tests.media_factory import make_clip, read_index

FPS = 10
GOP = 10


@pytest.fixture(scope="module")
def packets(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[av.packet.Packet, float]]:
    path = make_clip(tmp_path_factory.mktemp("kept") / "gop10.mp4", seconds=4, fps=FPS, gop=GOP)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.has_b_frames  # the decode order differs from the display order
        return [(p, float(p.pts * stream.time_base)) for p in container.demux(stream) if p.size]


def store(packets: list[tuple[av.packet.Packet, float]], path: Path, **kw: int) -> KeptPackets:
    codec = av.open(str(path)).streams.video[0].codec_context
    kept = KeptPackets("test", codec, **kw)
    for packet, t in packets:
        kept.add(packet, t)
    return kept


@pytest.fixture
def clip_path(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "codec.mp4", seconds=0.2, fps=FPS)  # only its decoder parameters are used


def index(frame: av.video.frame.VideoFrame) -> int:
    return read_index(frame.to_ndarray(format="rgb24"))


def test_a_keyframe_is_decoded_alone_and_once(packets, clip_path: Path) -> None:
    kept = store(packets, clip_path)
    frame = kept.keyframe(1.0)
    assert frame is not None and index(frame) == 10 and kept.decoded == 1
    assert kept.keyframe(1.0) is frame and kept.decoded == 1  # a second subscriber's pick is free
    assert kept.keyframe(1.5) is None  # not a keyframe


def test_nearest_decodes_its_gop_only_up_to_the_target(packets, clip_path: Path) -> None:
    kept = store(packets, clip_path)
    t, frame = kept.nearest(2.42) or (None, None)
    assert t == pytest.approx(2.4) and frame is not None and index(frame) == 24
    first = kept.decoded
    assert first < GOP  # frames after the target (and non-reference ones well before it) were not decoded
    t, frame = kept.nearest(2.77) or (None, None)  # later in the same GOP: the decoder goes on from there
    assert t == pytest.approx(2.8) and frame is not None and index(frame) == 28
    assert kept.decoded - first <= 5
    t, frame = kept.nearest(1.05) or (None, None)  # back in time: the earlier GOP is decoded afresh
    assert t == pytest.approx(1.0) and frame is not None and index(frame) == 10
    t, frame = kept.nearest(3.99) or (None, None)  # past the last packet: what the decoder holds
    assert frame is not None and index(frame) == 39


def test_keep_from_drops_the_gops_before_the_one_holding_a_time(packets, clip_path: Path) -> None:
    kept = store(packets, clip_path)
    kept.keep_from(2.5)
    assert kept.keyframe(1.0) is None and kept.keyframe(2.0) is not None
    kept.keep_from(None)
    assert kept.keyframe(2.0) is None and kept.keyframe(3.0) is not None


def test_a_gop_over_the_byte_limit_keeps_only_its_keyframe(packets, clip_path: Path) -> None:
    last_key = next(p.size for p, t in packets if t == 3.0)
    kept = store(packets, clip_path, max_bytes=last_key + 1)
    t, frame = kept.nearest(3.5) or (None, None)
    assert t == pytest.approx(3.0) and frame is not None and index(frame) == 30
