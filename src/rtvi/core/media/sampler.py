"""GOP-aware frame sampling from video files, and image loading.

Which frames a chunk gets (documented behaviour)
------------------------------------------------
For a chunk ``[s, e)`` and ``n`` frames per chunk, the targets are the centres of ``n`` equal
sub-intervals::

    t_k = s + (k + 0.5) * (e - s) / n        for k = 0 .. n-1

For each target the sampler takes the **first decoded frame whose PTS is >= t_k**. If there is no such
frame before the chunk end (the stream ends first, or the next frame lies at or after ``e``), it takes
the **last frame at or before t_k** instead (the frame on screen at ``t_k``; only a zero-length chunk
can have one exactly at ``t_k``), or failing that the first frame after ``t_k``. So a chunk always gets
exactly ``n`` frames when the video has at least one decodable frame; a chunk shorter than ``n`` frame
intervals repeats frames (the same frame can answer several targets, and the short last chunk of a
video repeats its last frames), which matches the spec's "pad by repeating" for short chunks. Times
are seconds from the video stream's start (``stream.start_time``), compared at microsecond precision.
``SampledChunk.frame_pts_s`` holds the chosen frames' times. A repeated frame may be the same ndarray
object more than once in ``SampledChunk.frames``.

How (why it is fast)
--------------------
* One demux pass (no decoding, ~10 ms per minute of video) builds the keyframe index.
* Decoding is sequential. The sampler seeks only when the next target lies in a later GOP than the
  decode position (a keyframe exists after the last decoded frame and at or before the target), so a
  seek never re-decodes a GOP. It seeks backwards only when a target lies behind the decode position
  (overlapping chunks).
* While the decoder runs towards a target, packets that end before the target are decoded with
  ``skip_frame=NONREF``: the decoder drops them when no other frame references them (non-reference B
  frames, about half of x264's frames), which is safe because such a frame can be neither the answer
  nor a reference. A packet is only skipped when a later packet before the target is already known
  (sent or read ahead), so the "frame at or before t_k" fallback is never skipped. This needs a decoder
  that applies ``skip_frame`` to the packet being sent, so it is only enabled for FFmpeg's h264, hevc,
  vp8 and vp9 decoders (libdav1d applies it when a delayed picture comes out, which drops the wrong
  frames; AV1 and others decode every frame).
* Only the chosen frames are converted: one ``to_ndarray(width, height, format="rgb24")`` call resizes
  and converts (conversion costs 30-40 % of decode time when done for every frame).
* The codec's default threading (slice threads) is kept: on 2 cores it beat frame threading ("AUTO").
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import av.container
import av.video.codeccontext
import av.video.frame
import av.video.stream
import numpy as np
from av.codec.hwaccel import HWAccel
from PIL import Image, ImageOps

from .probe import open_input, scan_keyframes, stream_origin_pts, video_stream
from .types import ChunkSpec, Frame, MediaError, SampledChunk

log = logging.getLogger(__name__)

# Packets read ahead of the decoder: they tell the skip logic which frames come next (B-frame reorder
# depth is at most a few frames).
_LOOKAHEAD = 8
# Times of recently sent packets kept for the same purpose.
_RECENT = 32
# Decoders that apply skip_frame to the packet being sent (checked against a decode-all reference).
_SKIP_NONREF_DECODERS = frozenset({"h264", "hevc", "vp8", "vp9"})
# Times are compared at microsecond precision.
_TIME_EPS = 1e-6

_Picked = tuple[av.video.frame.VideoFrame, float]
_Skip = Literal["DEFAULT", "NONREF"]


def chunk_targets(chunk: ChunkSpec, n: int) -> list[float]:
    """The sampling targets of a chunk (see the module docstring), rounded to microseconds."""
    span = chunk.end_s - chunk.start_s
    return [round(chunk.start_s + (k + 0.5) * span / n, 6) for k in range(n)]


class FileFrameSampler:
    """Samples ``frames_per_chunk`` RGB frames per chunk from a video file (see the module docstring).

    ``size`` is the output ``(width, height)``; ``None`` keeps the decoded size. Use as a context manager
    or call :meth:`close`; stopping the iteration of :meth:`sample` and closing is the way to cancel.
    ``hwaccel`` decodes on that device (NVDEC; see hwaccel.py), falling back to software.
    ``skip_nonref=False`` decodes every frame (same output, slower); ``thread_type`` ("SLICE", "FRAME",
    "AUTO") overrides the codec default, for benchmarks.
    """

    # Decoding state, (re)set by _reset_state.
    _packets: Iterator[av.Packet]  # demux iterator since the last seek
    _lookahead: deque[tuple[av.Packet, float | None]]  # (packet, its time) read ahead of the decoder
    _pending: deque[av.video.frame.VideoFrame]  # decoded, not yet looked at
    _recent: deque[float]  # times of the packets sent since the last seek
    _demux_done: bool
    _drained: bool
    _skip_state: _Skip
    _cur: _Picked | None  # the last frame looked at (the decode position)
    _cur_from: float  # the smallest target _cur is known to answer
    _last_t: float | None
    _pos_t: float  # decode position: time of _cur, or of the keyframe just seeked to
    _landed: float | None  # keyframe time of the last seek, until the first frame after it is checked

    def __init__(
        self,
        path: Path,
        frames_per_chunk: int,
        size: tuple[int, int] | None = None,
        *,
        skip_nonref: bool = True,
        thread_type: str | None = None,
        hwaccel: HWAccel | None = None,
    ) -> None:
        if frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
        if size is not None and (size[0] < 1 or size[1] < 1):
            raise ValueError(f"size must be positive (width, height), got {size}")
        self.path = Path(path)
        self.frames_per_chunk = frames_per_chunk
        self.size = size
        # Counters, for tests and benchmarks.
        self.seeks = 0
        self.frames_decoded = 0
        self.packets_sent = 0
        self.reopens = 0
        self._seekable = True
        self._closed = False
        self._hwaccel = hwaccel
        self._container = open_input(self.path, hwaccel)
        try:
            self._stream = video_stream(self._container, self.path)
            self._thread_type = thread_type
            self._ctx = self._decoder()
            self._skip_nonref = skip_nonref and self._ctx.codec.name in _SKIP_NONREF_DECODERS
            self._tb = float(self._stream.time_base) if self._stream.time_base else 0.0
            self._origin = stream_origin_pts(self._stream)
            rate = self._stream.average_rate or self._stream.guessed_rate
            self._frame_s = 1.0 / float(rate) if rate and float(rate) > 0 else 1.0 / 30
            keyframes = scan_keyframes(self._container, self._stream)
            self.keyframes: list[float] = [t for t, _ in keyframes]
            self._kf_pts = [p for _, p in keyframes]
            self._reset_state()
            self._seek(None, required=True)
            self.seeks = 0  # the rewind after indexing is not a sampling seek
        except BaseException:
            self._container.close()
            raise

    @property
    def hardware(self) -> bool:
        """Whether the decoder was given a hardware device (NVDEC). FFmpeg may still decode a stream the
        device cannot handle in software behind it (allow_software_fallback)."""
        return bool(self._ctx.is_hwaccel)

    # -- public API -----------------------------------------------------------------------------------

    def sample(self, chunks: Sequence[ChunkSpec]) -> Generator[SampledChunk, None, None]:
        """Yield one :class:`SampledChunk` per chunk, in the given order.

        ``decode_latency_s`` is the wall time spent producing that chunk (not the consumer's time).
        A chunk gets an empty frame list only if the video has no decodable frame at all.
        """
        for chunk in chunks:
            if self._closed:
                raise RuntimeError("sampler is closed")
            started = time.perf_counter()
            picked = self._pick(chunk)
            frames: list[Frame] = []
            converted: dict[int, Frame] = {}
            for frame, _ in picked:
                # Repeated frames are converted once.
                key = id(frame)
                if key not in converted:
                    converted[key] = self._to_rgb(frame)
                frames.append(converted[key])
            yield SampledChunk(
                chunk=chunk,
                frames=frames,
                frame_pts_s=[t for _, t in picked],
                decode_latency_s=time.perf_counter() - started,
            )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._lookahead.clear()
            self._cur = None
            self._container.close()

    def __enter__(self) -> FileFrameSampler:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- choosing frames ------------------------------------------------------------------------------

    def _pick(self, chunk: ChunkSpec) -> list[_Picked]:
        picked: list[_Picked] = []
        fallback: _Picked | None = None
        for t in chunk_targets(chunk, self.frames_per_chunk):
            if fallback is not None:
                # Once a target falls back to "the frame before it", every later target of the chunk does
                # too: no frame lies between it and the chunk end.
                picked.append(fallback)
                continue
            found = self._locate(t, chunk.end_s)
            if found is None:
                break
            choice, is_fallback = found
            if is_fallback:
                fallback = choice
            picked.append(choice)
        return picked

    def _locate(self, t: float, end: float) -> tuple[_Picked, bool] | None:
        """The frame for target ``t`` of a chunk ending at ``end``, and whether it is the fallback."""
        cur = self._cur
        if cur is not None and self._cur_from <= t <= cur[1] < end:
            return cur, False  # the last decoded frame already answers it
        kf = self._kf_at_or_before(t)
        if cur is not None and t <= cur[1]:
            # Behind the decoder (overlapping chunks), or the answer is a frame before it: go back.
            self._seek(kf, required=True)
        elif self._seekable and kf is not None and self.keyframes[kf] > self._pos_t:
            self._seek(kf)  # the target is in a later GOP; otherwise decode on through this one
        cur = self._cur  # a seek forgets the decoded frames
        below: _Picked | None = cur if cur is not None and cur[1] < t else None
        while True:
            frame = self._next_frame(t)
            landed = self._landed
            self._landed = None
            if frame is None:  # end of stream
                if landed is not None and self._seekable:
                    self._distrust_seeking("no frame after a seek")
                    continue
                return (below, True) if below is not None else None
            ft = self._frame_time(frame)
            if landed is not None and ft > max(t, landed) + _TIME_EPS and self._seekable:
                # The first frame after a seek lies after both the keyframe and the target: the seek
                # landed late (MPEG-TS seeks by byte bisection). Frames may have been missed.
                self._distrust_seeking(f"seek landed at {ft:.3f} s, wanted {landed:.3f} s")
                continue
            picked = (frame, ft)
            # The first frame at or after t answers every target in [t, ft]; a frame before t is only
            # known to answer a target equal to its own time.
            self._cur, self._pos_t, self._cur_from = picked, ft, min(t, ft)
            if ft >= t:
                if ft < end:
                    return picked, False
                # No frame in [t, end): the frame on screen at t (at or before it), else this one.
                return (picked if ft == t or below is None else below), True
            below = picked

    def _distrust_seeking(self, why: str) -> None:
        # From now on decode linearly: no forward seeks, and going back means reopening the file.
        log.info("%s: %s; decoding without seeks", self.path.name, why)
        self._seekable = False
        self._reopen()

    def _kf_at_or_before(self, t: float) -> int | None:
        i = bisect.bisect_right(self.keyframes, t) - 1
        return i if i >= 0 else None

    # -- decoding -------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._packets = iter(())
        self._lookahead = deque()
        self._pending = deque()
        self._recent = deque(maxlen=_RECENT)
        self._demux_done = False
        self._drained = False
        self._skip_state = "DEFAULT"
        self._cur = None
        self._cur_from = math.inf
        self._last_t = None
        self._pos_t = 0.0
        self._landed = None

    def _seek(self, kf: int | None, *, required: bool = False) -> bool:
        """Seek to keyframe ``kf`` (None: the stream start).

        If the container cannot seek (or its seeks proved wrong): False, or when ``required`` (going
        backwards), reopen the file and decode from the start instead (slow but right).
        """
        if self._seekable:
            target = self._kf_pts[kf] if kf is not None else self._origin
            try:
                # Also flushes the decoder (PyAV's seek calls avcodec_flush_buffers).
                self._container.seek(target, stream=self._stream, backward=True)
            except (av.FFmpegError, OSError) as e:
                log.info("%s: seek failed (%s); decoding without seeks", self.path.name, e)
                self._seekable = False
            else:
                self.seeks += 1
                landed = self.keyframes[kf] if kf is not None else (self.keyframes or [0.0])[0]
                self._restart_decoding(landed)
                self._landed = landed  # checked against the first frame that comes out
                return True
        if required:
            self._reopen()
            return True
        return False

    def _reopen(self) -> None:
        self._container.close()
        self._container = open_input(self.path, self._hwaccel)
        self._stream = video_stream(self._container, self.path)
        self._ctx = self._decoder()
        self.reopens += 1
        self._restart_decoding(0.0)

    def _decoder(self) -> av.video.codeccontext.VideoCodecContext:
        ctx = self._stream.codec_context
        if self._thread_type is not None:
            ctx.thread_type = self._thread_type  # benchmarks only; the default measured fastest
        return ctx

    def _restart_decoding(self, position: float) -> None:
        skip_was = self._skip_state
        self._reset_state()
        self._packets = self._container.demux(self._stream)
        self._pos_t = position
        if skip_was != "DEFAULT":
            self._ctx.skip_frame = "DEFAULT"

    def _next_frame(self, target: float) -> av.video.frame.VideoFrame | None:
        """The next decoded frame in presentation order, or None at the end of the stream."""
        while not self._pending:
            if self._drained:
                return None
            item = self._pull()
            if item is None:
                self._drained = True
                self._pending.extend(self._decode(None))  # drain the decoder's delayed frames
                continue
            packet, pt = item
            self._set_skip(pt, target)
            self.packets_sent += 1
            self._pending.extend(self._decode(packet))
        self.frames_decoded += 1
        return self._pending.popleft()

    def _pull(self) -> tuple[av.Packet, float | None] | None:
        while not self._demux_done and len(self._lookahead) < _LOOKAHEAD:
            try:
                packet = next(self._packets)
            except StopIteration:
                self._demux_done = True
                break
            except (av.FFmpegError, OSError) as e:
                # A truncated or damaged file: what was read so far is still decoded.
                log.info("%s: demux stopped (%s)", self.path.name, e)
                self._demux_done = True
                break
            if not packet.size:
                continue  # PyAV's end-of-stream marker; the decoder is drained explicitly instead
            pt = None if packet.pts is None else round((packet.pts - self._origin) * self._tb, 6)
            self._lookahead.append((packet, pt))
        return self._lookahead.popleft() if self._lookahead else None

    def _set_skip(self, pt: float | None, target: float) -> None:
        skip = (
            self._skip_nonref
            and pt is not None
            and pt < target
            and (
                any(pt < q < target for q in self._recent)
                or any(q is not None and pt < q < target for _, q in self._lookahead)
            )
        )
        want: _Skip = "NONREF" if skip else "DEFAULT"
        if want != self._skip_state:
            self._ctx.skip_frame = want
            self._skip_state = want
        if pt is not None:
            self._recent.append(pt)

    def _decode(self, packet: av.Packet | None) -> list[av.video.frame.VideoFrame]:
        try:
            return self._ctx.decode(packet)
        except av.FFmpegError as e:
            # One damaged packet should not end the video; the decoder conceals and goes on.
            log.debug("%s: decode error skipped (%s)", self.path.name, e)
            return []

    def _frame_time(self, frame: av.video.frame.VideoFrame) -> float:
        ts = frame.pts if frame.pts is not None else frame.dts
        if ts is not None:
            t = round((ts - self._origin) * self._tb, 6)
        elif self._last_t is not None:
            t = round(self._last_t + self._frame_s, 6)  # no timestamp (seen on first frames): estimate
        else:
            t = 0.0
        self._last_t = t
        return t

    def _to_rgb(self, frame: av.video.frame.VideoFrame) -> Frame:
        if self.size is None:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.to_ndarray(width=self.size[0], height=self.size[1], format="rgb24")
        return rgb.astype(np.uint8, copy=False)  # rgb24 is uint8 already; this narrows the type


def load_image(path: Path, size: tuple[int, int] | None = None) -> Frame:
    """Load an image as RGB HxWx3 uint8, rotated per its EXIF orientation, resized to ``(width, height)``."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                # Let libjpeg decode at a reduced scale (still >= the output size): much faster for photos.
                orientation = img.getexif().get(0x0112, 1)
                w, h = size if orientation not in (5, 6, 7, 8) else (size[1], size[0])
                img.draft("RGB", (w, h))
            oriented = ImageOps.exif_transpose(img) or img
            rgb = oriented.convert("RGB")
            if size is not None and rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)
    except FileNotFoundError as e:
        raise MediaError(f"{path.name}: file not found") from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        # PIL: UnidentifiedImageError and truncated data are OSErrors.
        raise MediaError(f"{path.name}: not a readable image ({e})") from e
