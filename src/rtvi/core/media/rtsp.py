"""Live RTSP sources: one PyAV reader thread and decoder per stream, shared by every subscriber.

Reading
-------
``av.open(url, options={"rtsp_transport": ...}, timeout=(open_s, read_s))``: PyAV's own timeouts (the
FFmpeg ``stimeout`` option no longer exists and is silently ignored, so a read would hang). Each stream
has a dedicated daemon thread, so a stuck camera blocks only its own thread, never the event loop.

Reconnection
------------
A read error, a read timeout and a clean end of stream all count as a disconnect (a killed RTSP server
ends the read either way). After a disconnect, or when connecting fails, the reader retries every
``reconnect_interval_s``; it gives up when ``reconnect_max_attempts`` consecutive attempts have failed
or ``reconnect_window_s`` has passed since the stream was last healthy, whichever comes first (0 turns a
limit off). A connection that delivers a frame resets both. Subscribers are told about every gap (their
open chunks are dropped) and, when the reader gives up, get ``on_end(error)``.

Frame times (wall clock)
------------------------
When the camera sends RTCP sender reports, FFmpeg sets ``start_time_realtime`` (the NTP time of PTS 0),
and a frame's time is ``start_time_realtime + pts``: the camera's capture clock. Before the first report
(the first seconds of a connection) and for cameras that send none, the time is the frame's PTS plus the
smallest ``receive time - PTS`` seen on the connection: receive time with network and buffering jitter
removed (frames that arrive late in a burst keep their true spacing).

Decoding cost
-------------
Decoding every frame of every camera is what limits a live machine, so nothing is decoded as it
arrives. The reader keeps the compressed packets of the GOPs a subscriber may still take a frame from
(``KeptPackets``) and decodes only the frames the chunk planners choose (see ``windows``): by default
one keyframe per sampled frame, and frames are converted to RGB only when picked, resized in the same
``to_ndarray`` call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import av
import av.container
import av.error
import av.packet
import av.video.codeccontext
import av.video.frame

from rtvi.core.credentials import redact

from .types import ChunkSpec, Frame, MediaError, SampledChunk
from .windows import FramePick, LiveChunkPlanner

log = logging.getLogger(__name__)

# A camera clock further than this from ours is worth a warning (its chunk times will look odd).
_SKEW_WARN_S = 5.0
# A receive-time offset that grows by more than this means the PTS jumped: re-anchor.
_REANCHOR_S = 1.0
# Compressed packets kept per stream. A GOP longer than this keeps only its keyframe.
MAX_KEPT_BYTES = 32 * 1024 * 1024
# Decoding towards a frame skips non-reference frames up to this long before it.
_NONREF_SKIP_MARGIN_S = 0.1
FPS_WINDOW_S = 5.0
# How long the live reader lets FFmpeg analyse a camera when it connects. FFmpeg's own default reads
# about 30 frames to estimate the frame rate before the first packet comes out: 1 s at 30 fps, 2 s at
# 15 fps, on every connect, reconnect and cluster take-over. The live path measures the rate itself
# (_FrameRate) and needs only the codec parameters, which the SDP or the first keyframe carries.
# Measured on gst-rtsp-server (bench/rtsp_open_bench.py): connected 1.00 -> 0.30 s at 30 fps.
LIVE_ANALYZE_S = 0.2


@dataclass(frozen=True, slots=True)
class RtspOptions:
    transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 2.0
    reconnect_interval_s: float = 5.0
    reconnect_window_s: float = 60.0
    reconnect_max_attempts: int = 10


@dataclass(frozen=True, slots=True)
class StreamProbe:
    codec: str
    width: int
    height: int
    fps: float


# --- opening and probing --------------------------------------------------------------------------
def open_rtsp(url: str, opts: RtspOptions, analyze_s: float | None = None) -> av.container.InputContainer:
    """Connect. `analyze_s`: how long FFmpeg may analyse the stream (None: FFmpeg's default, which also
    estimates the frame rate)."""
    # RTSP only: the camera's URL cannot turn into a file read or another protocol.
    options = {
        "rtsp_transport": opts.transport,
        "format_whitelist": "rtsp",
        "protocol_whitelist": "rtsp,rtsps,rtp,srtp,tcp,udp,tls",
    }
    if analyze_s is not None:
        options["analyzeduration"] = str(round(analyze_s * 1e6))
    try:
        container = av.open(
            url,
            options=options,
            timeout=(opts.open_timeout_s, opts.read_timeout_s),
        )
    except Exception as exc:  # PyAV raises many OSError / FFmpegError subclasses
        raise MediaError(f"cannot open RTSP source: {type(exc).__name__}: {redact(str(exc))}") from exc
    if not container.streams.video:
        container.close()
        raise MediaError("the RTSP source has no video stream")
    return container


def probe_rtsp(url: str, opts: RtspOptions) -> StreamProbe:
    """Connect, read the video stream's parameters (FFmpeg's full analysis: the frame rate it reports is
    the camera's), disconnect. Raises MediaError."""
    container = open_rtsp(url, opts)
    try:
        stream = container.streams.video[0]
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        return StreamProbe(cc.name, cc.width, cc.height, float(rate) if rate else 0.0)
    finally:
        container.close()


# --- frame times ----------------------------------------------------------------------------------
class FrameClock:
    """Wall-clock time of the frames of one connection (see the module docstring)."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._offset: float | None = None
        self.source: Literal["rtcp", "receive"] = "receive"
        self._warned = False

    def time(self, start_time_realtime: int | None, pts_s: float | None, received: float) -> float:
        if pts_s is None:  # the first decoded frame may have no PTS
            return received
        delta = received - pts_s
        if self._offset is None or delta < self._offset or delta - self._offset > _REANCHOR_S:
            self._offset = delta
        if start_time_realtime is not None:
            if self.source != "rtcp":
                self.source = "rtcp"
                log.info("stream %s: frame times from RTCP sender reports", self.stream_id)
            t = start_time_realtime / 1e6 + pts_s
            if not self._warned and abs(t - received) > _SKEW_WARN_S:
                self._warned = True
                log.warning(
                    "stream %s: camera clock differs from ours by %.1f s; chunk times follow the camera",
                    self.stream_id,
                    t - received,
                )
            return t
        return pts_s + self._offset


# --- decoding on request ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Gop:
    key_time: float
    packets: list[av.packet.Packet]
    time_of: dict[int, float]  # PTS -> time: of the packets, and of the frames they decode to
    nbytes: int
    truncated: bool = False

    def time(self, pts: int | None) -> float:
        return self.time_of.get(pts, self.key_time) if pts is not None else self.key_time


@dataclass(slots=True)
class _Cursor:
    """Where the decoder stands in a GOP, and the last two frames it gave."""

    gop: _Gop
    next: int = 0
    prev: tuple[float, av.video.frame.VideoFrame] | None = None
    last: tuple[float, av.video.frame.VideoFrame] | None = None


class KeptPackets:
    """The packets of the GOPs a subscriber may still take a frame from; decodes frames on request.

    A ``windows.FrameSource``. Used on the reader thread only.
    """

    def __init__(
        self,
        stream_id: str,
        codec: av.video.codeccontext.VideoCodecContext,
        max_bytes: int = MAX_KEPT_BYTES,
    ) -> None:
        self.stream_id = stream_id
        self._codec = codec
        self._max_bytes = max_bytes
        self._gops: deque[_Gop] = deque()
        self._bytes = 0
        self._warned_truncation = False
        self._cursor: _Cursor | None = None
        self._keyframes: dict[float, av.video.frame.VideoFrame] = {}  # decoded, of the kept GOPs
        self.decoded = 0

    def add(self, packet: av.packet.Packet, t: float) -> None:
        if packet.is_keyframe:
            self._gops.append(_Gop(t, [], {}, 0))
        elif not self._gops or self._gops[-1].truncated:
            return  # before the first keyframe nothing decodes
        gop = self._gops[-1]
        gop.packets.append(packet)
        if packet.pts is not None:
            gop.time_of[packet.pts] = t
        gop.nbytes += packet.size
        self._bytes += packet.size
        while self._bytes > self._max_bytes and len(self._gops) > 1:
            self._drop_oldest()
        if self._bytes > self._max_bytes:  # one GOP longer than the limit: keep its keyframe only
            if not self._warned_truncation:  # a long-GOP camera would say it every GOP
                self._warned_truncation = True
                log.warning(
                    "stream %s: GOPs over %d bytes keep their keyframe only", self.stream_id, self._max_bytes
                )
            self._bytes -= gop.nbytes - gop.packets[0].size
            gop.nbytes = gop.packets[0].size
            del gop.packets[1:]
            gop.truncated = True
            self._cursor = None

    def keep_from(self, t: float | None) -> None:
        """Drop the GOPs before the one holding `t` (all but the newest when None)."""
        while len(self._gops) > 1 and (t is None or self._gops[1].key_time <= t):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        gop = self._gops.popleft()
        self._bytes -= gop.nbytes
        self._keyframes.pop(gop.key_time, None)
        if self._cursor is not None and self._cursor.gop is gop:
            self._cursor = None

    # --- FrameSource ----------------------------------------------------------------------------
    def keyframe(self, t: float) -> av.video.frame.VideoFrame | None:
        if t in self._keyframes:
            return self._keyframes[t]
        gop = next((g for g in self._gops if g.key_time == t), None)
        if gop is None:
            return None
        self._restart()
        frames = self._decode(gop.packets[0]) + self._drain()
        if not frames:
            return None
        self._keyframes[t] = frames[0]
        return frames[0]

    def nearest(self, t: float) -> tuple[float, av.video.frame.VideoFrame] | None:
        if not self._gops:
            return None
        gop = next((g for g in reversed(self._gops) if g.key_time <= t), self._gops[0])
        cur = self._cursor
        if cur is None or cur.gop is not gop or (cur.last is not None and cur.last[0] >= t):
            self._restart()
            cur = self._cursor = _Cursor(gop)
        while cur.last is None or cur.last[0] < t:
            if cur.next == len(gop.packets):  # the GOP ends before `t`: take what the decoder holds
                frames = self._drain()
                self._cursor = None
            else:
                packet_time = gop.time(gop.packets[cur.next].pts)
                # Frames well before the target are only needed as references.
                self._codec.skip_frame = "NONREF" if packet_time < t - _NONREF_SKIP_MARGIN_S else "DEFAULT"
                frames = self._decode(gop.packets[cur.next])
                cur.next += 1
            for frame in frames:
                cur.prev, cur.last = cur.last, (gop.time(frame.pts), frame)
            if self._cursor is None:
                break
        near = [c for c in (cur.prev, cur.last) if c is not None]
        return min(near, key=lambda c: abs(c[0] - t)) if near else None

    def _restart(self) -> None:
        self._codec.flush_buffers()
        self._codec.skip_frame = "DEFAULT"
        self._cursor = None

    def _decode(self, packet: av.packet.Packet) -> list[av.video.frame.VideoFrame]:
        try:
            frames = self._codec.decode(packet)
        except av.error.InvalidDataError:  # a damaged packet: its frame is lost, the stream goes on
            return []
        self.decoded += len(frames)
        return frames

    def _drain(self) -> list[av.video.frame.VideoFrame]:
        """The frames the decoder still holds; it starts afresh afterwards."""
        try:
            frames = self._codec.decode(None)
        except av.error.FFmpegError:
            frames = []
        self._codec.flush_buffers()
        self.decoded += len(frames)
        return frames


# --- subscribers ----------------------------------------------------------------------------------
class FrameSink(Protocol):
    """What a LiveDecoder feeds. Called on the decoder's thread: must be quick and never block."""

    def on_packet(self, t: float, key: bool, frames: KeptPackets) -> None: ...
    def earliest_target(self) -> float | None: ...
    def on_gap(self, reason: str) -> None: ...
    def on_end(self, error: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class PickedFrame:
    """A frame a chunk has just taken, before the chunk is complete."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class LiveGap:
    reason: str


@dataclass(frozen=True, slots=True)
class LiveEnd:
    error: str | None


LiveEvent = SampledChunk | PickedFrame | LiveGap | LiveEnd


class LiveChunker:
    """A FrameSink that cuts wall-clock chunks and hands each chunk's sampled frames to `emit`.

    `emit` is called on the decoder thread; it must hand the event over without blocking (the engine
    uses loop.call_soon_threadsafe).
    """

    def __init__(
        self,
        duration_s: float,
        overlap_s: float,
        frames_per_chunk: int,
        size: tuple[int, int] | None,
        emit: Callable[[LiveEvent], None],
        pick: FramePick = "keyframe",
        announce_picks: bool = False,
        epoch_grid: bool = False,
    ) -> None:
        self.size = size
        self.emit = emit
        # Emit a PickedFrame for each frame as it is taken: only for a consumer that starts work on it.
        self.announce_picks = announce_picks
        self._decode_s = 0.0  # spent decoding and converting for the chunk being filled
        self.planner: LiveChunkPlanner[av.video.frame.VideoFrame, Frame] = LiveChunkPlanner(
            duration_s, overlap_s, frames_per_chunk, self._to_rgb, pick, epoch_grid=epoch_grid
        )

    def _to_rgb(self, frame: av.video.frame.VideoFrame) -> Frame:
        if self.size is None:
            array = frame.to_ndarray(format="rgb24")
        else:
            array = frame.to_ndarray(width=self.size[0], height=self.size[1], format="rgb24")
        rgb: Frame = array  # type: ignore[assignment]  # rgb24 is always uint8
        if self.announce_picks:
            self.emit(PickedFrame(rgb))
        return rgb

    def on_packet(self, t: float, key: bool, frames: KeptPackets) -> None:
        start = time.perf_counter()
        completed = self.planner.advance(t, key, frames)  # decodes and converts what it picks
        self._decode_s += time.perf_counter() - start
        for done in completed:
            w = done.window
            spec = ChunkSpec(w.index, w.start_s, w.end_s)
            self.emit(SampledChunk(spec, done.frames, done.frame_times, self._decode_s))
            self._decode_s = 0.0

    def earliest_target(self) -> float | None:
        return self.planner.earliest_target()

    def on_gap(self, reason: str) -> None:
        dropped = self.planner.reset()
        self._decode_s = 0.0
        self.emit(LiveGap(f"{reason} ({dropped} open chunk(s) dropped)"))

    def on_end(self, error: str | None) -> None:
        self.emit(LiveEnd(error))


# --- the shared reader ----------------------------------------------------------------------------
class _FrameRate:
    """stream_fps: frames per FPS_WINDOW_S of the camera's own timestamps (arrival jitter aside).
    Frames, not packets: a PTS counts once."""

    def __init__(self, report: Callable[[float], None]) -> None:
        self._report = report
        self._since: float | None = None
        self._last: float | None = None
        self._count = 0

    def add(self, pts_s: float) -> None:
        if pts_s == self._last:
            return
        self._last = pts_s
        self._count += 1
        if self._since is None or pts_s < self._since:  # the first frame, or the PTS went back
            self._since, self._count = pts_s, 0
        elif pts_s - self._since >= FPS_WINDOW_S:
            self._report(self._count / (pts_s - self._since))
            self._since, self._count = pts_s, 0


class LiveDecoder:
    """One RTSP connection and decoder for one stream, fanning frames out to its sinks."""

    def __init__(
        self,
        stream_id: str,
        url: str,
        opts: RtspOptions,
        *,
        on_retry: Callable[[str], None] | None = None,
        on_running: Callable[[int], None] | None = None,
        on_fps: Callable[[float], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._url = url  # may hold credentials: never logged
        self.opts = opts
        self._sinks: list[FrameSink] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtsp-{stream_id[:24]}", daemon=True)
        self._on_retry = on_retry or (lambda _reason: None)
        self._on_running = on_running or (lambda _delta: None)
        self._on_fps = on_fps or (lambda _fps: None)
        self.connected = False
        self.connections = 0
        self.failure: str | None = None

    # --- subscribers --------------------------------------------------------------------------
    def add(self, sink: FrameSink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove(self, sink: FrameSink) -> int:
        """-> how many sinks remain."""
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)
            return len(self._sinks)

    def _snapshot(self) -> list[FrameSink]:
        with self._lock:
            return list(self._sinks)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does after the current read (at most the read timeout)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        self._on_running(1)
        try:
            self._loop()
        except Exception as exc:  # a bug, not a camera problem: end the subscribers rather than hang them
            log.exception("stream %s: reader crashed", self.stream_id)
            self._end(f"RTSP reader crashed: {exc}")
        finally:
            self._on_running(-1)

    def _loop(self) -> None:
        opts = self.opts
        attempts = 0
        unhealthy_since: float | None = None
        while not self._stop.is_set():
            error = "end of stream"
            got_frames = False
            opening = time.monotonic()
            try:
                container = open_rtsp(self._url, opts, analyze_s=LIVE_ANALYZE_S)
            except MediaError as exc:
                error = str(exc)
            else:
                self.connections += 1
                log.info("stream %s: connected in %.2f s", self.stream_id, time.monotonic() - opening)
                self.connected = True
                try:
                    got_frames, error = self._pump(container)
                finally:
                    self.connected = False
                    container.close()
            if self._stop.is_set():
                return
            now = time.monotonic()
            if got_frames:
                attempts, unhealthy_since = 0, None
            if unhealthy_since is None:
                unhealthy_since = now
                for sink in self._snapshot():
                    sink.on_gap(f"disconnected: {error}")
            attempts += 1
            out_of_attempts = opts.reconnect_max_attempts > 0 and attempts > opts.reconnect_max_attempts
            out_of_time = opts.reconnect_window_s > 0 and now - unhealthy_since >= opts.reconnect_window_s
            if out_of_attempts or out_of_time:
                self._end(
                    f"RTSP stream {self.stream_id} lost ({error}); gave up after {attempts - 1} reconnection "
                    f"attempt(s) over {now - unhealthy_since:.1f} s"
                )
                return
            log.warning(
                "stream %s: %s; reconnecting in %.1f s (attempt %d)",
                self.stream_id,
                error,
                opts.reconnect_interval_s,
                attempts,
            )
            self._on_retry("reconnect")
            if self._stop.wait(opts.reconnect_interval_s):
                return

    def _pump(self, container: av.container.InputContainer) -> tuple[bool, str]:
        """Read until the connection ends. -> (whether any packet came, why it ended)."""
        stream = container.streams.video[0]
        clock = FrameClock(self.stream_id)
        kept = KeptPackets(self.stream_id, stream.codec_context)
        time_base = stream.time_base or 1 / 90000
        got = keyed = False
        t = time.time()
        rate = _FrameRate(self._on_fps)
        connected = time.monotonic()
        try:
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return got, "stopped"
                if packet.size == 0:  # the flush packet at the end of a stream
                    continue
                pts_s = float(packet.pts * time_base) if packet.pts is not None else None
                t = clock.time(container.start_time_realtime, pts_s, time.time()) if pts_s is not None else t
                got = True
                if packet.is_keyframe and not keyed:  # what a chunk can start from
                    keyed = True
                    log.info("stream %s: first keyframe %.2f s after connecting", self.stream_id,
                             time.monotonic() - connected)  # fmt: skip
                if pts_s is not None:
                    rate.add(pts_s)
                kept.add(packet, t)
                sinks = self._snapshot()
                for sink in sinks:
                    sink.on_packet(t, packet.is_keyframe, kept)
                wanted = [e for sink in sinks if (e := sink.earliest_target()) is not None]
                kept.keep_from(min(wanted, default=None))
        except Exception as exc:  # read timeout, connection reset, corrupt data: all a disconnect
            return got, f"{type(exc).__name__}: {exc}"
        return got, "end of stream"

    def _end(self, error: str) -> None:
        self.failure = error
        log.error("stream %s: %s", self.stream_id, error)
        for sink in self._snapshot():
            sink.on_end(error)
