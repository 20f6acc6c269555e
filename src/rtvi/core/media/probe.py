"""Probe a media file (image or video) with PyAV, and index a video's keyframes.

Probing opens the container, checks that a supported video stream exists, decodes the first frame (so a
file that opens but cannot be decoded is rejected early), and reads the duration. The duration comes from
the stream (or container) header, checked against the timestamps of the last packets (one short demux of
the tail, no decoding); when the header has none, or the tail disagrees (a file truncated mid-stream keeps
its header), the packets win. Everything is demux-level work, so a probe takes milliseconds.

Times are in seconds relative to the video stream's start (``stream.start_time``), which is what chunk
times and sampled frame times use too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import av.container
import av.video.stream
from av.codec.hwaccel import HWAccel
from PIL import Image

from .hwaccel import hardware_failed, hardware_fallback
from .types import MediaError, MediaInfo

log = logging.getLogger(__name__)

# Canonical FFmpeg codec names accepted as video. Anything else that FFmpeg happens to open (its "tty"
# demuxer reads any text file as an ANSI-art video, for one) is rejected as not media.
VIDEO_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "h263", "theora"}
)
IMAGE_CODECS = frozenset({"mjpeg", "png", "bmp", "tiff", "webp"})
_IMAGE_NAMES = {"mjpeg": "jpeg"}
# Demuxers that read exactly one still picture ("image2" is FFmpeg's image-file reader).
_IMAGE_DEMUXERS = frozenset({"image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe"})
# At most this many packets are fed to the decoder to get a first frame (decoder delay is a few frames;
# VP9 hidden frames and damaged packets need some slack).
_FIRST_FRAME_PACKETS = 64
# A recording cut mid-GOP starts with packets that cannot be decoded before the first keyframe: up to
# this many are passed over without decoding (10 s at 30 fps covers long GOPs).
_LEADING_SKIP_PACKETS = 300
# The tail scan starts this far before the claimed end (the seek then backs up to a keyframe).
_TAIL_S = 2.0
# A header duration further than this from the packets' end is treated as wrong (seconds).
_DURATION_TOLERANCE_S = 0.5
_EXIF_ORIENTATION = 0x0112


# Untrusted media is opened with these demuxers only, reading through the `file` protocol only. Demuxers
# that follow references to other files or URLs (hls, concat, dash, ...) are not in the list, so a
# 130-byte playlist cannot make us read a file outside the store. image2 (FFmpeg's pick for many still
# images) reads numbered sequences by file-name pattern: pattern_type=none keeps it to the one file.
SAFE_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,ivf,obu,h264,hevc,m4v,mpeg,asf,ogg,"
    "image2,mjpeg,jpeg_pipe,png_pipe,webp_pipe,bmp_pipe,tiff_pipe,gif,wav"
)
FILE_OPTIONS = {"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": "file", "pattern_type": "none"}


def open_input(path: Path, hwaccel: HWAccel | None = None) -> av.container.InputContainer:
    """Open ``path`` for reading with the demuxer allowlist, turning every failure into MediaError.
    With ``hwaccel``, its video decoders use that device, or software when it cannot be had."""

    def opened(accel: HWAccel | None) -> av.container.InputContainer:
        return av.open(str(path), mode="r", metadata_errors="ignore", options=FILE_OPTIONS, hwaccel=accel)

    device_error: av.FFmpegError | None = None
    if hwaccel is not None and not hardware_failed():
        try:
            return opened(hwaccel)
        except av.FFmpegError as exc:  # the device, or the file: opening in software tells which
            device_error = exc
    try:
        container = opened(None)
        if device_error is not None:
            hardware_fallback(device_error)
        return container
    except FileNotFoundError as e:
        raise MediaError(f"{path.name}: file not found") from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path.name}: not a readable media file in a supported container ({e})") from e


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream whose codec is supported, else :class:`MediaError`."""
    streams = list(container.streams.video)
    if not streams:
        kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
        raise MediaError(f"{path.name}: no video stream (streams: {', '.join(kinds)})")
    for stream in streams:
        if codec_name(stream) in VIDEO_CODECS | IMAGE_CODECS:
            return stream
    names = ", ".join(codec_name(s) for s in streams)
    raise MediaError(f"{path.name}: unsupported video codec ({names}) in {container.format.name}")


def codec_name(stream: av.video.stream.VideoStream) -> str:
    # The canonical name ("av1"), not the decoder's ("libdav1d").
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx is not None else "none"


def stream_origin_pts(stream: av.video.stream.VideoStream) -> int:
    """The stream's start in its time base; times reported by the media layer are relative to it."""
    return stream.start_time if stream.start_time is not None else 0


def probe(path: Path) -> MediaInfo:
    """Describe an image or video file; :class:`MediaError` if it is not decodable media."""
    path = Path(path)
    container = open_input(path)
    try:
        stream = video_stream(container, path)
        codec = codec_name(stream)
        kind = _classify(container, codec, path)
        first_w, first_h = _decode_first_frame(container, stream, path)
        width, height = first_w, first_h
        if kind == "image":
            width, height = _oriented_size(path, width, height)
            return MediaInfo("image", _IMAGE_NAMES.get(codec, codec), codec, width, height, 0.0, 0.0)
        duration, frame_count = _duration(container, stream, path)
        fps = _fps(stream, duration, frame_count)
        if duration <= 0 and frame_count and fps > 0:
            duration = frame_count / fps
        return MediaInfo(
            kind="video",
            container=_container_name(container, path),
            codec=codec,
            width=width,
            height=height,
            duration_s=round(duration, 6),
            fps=round(fps, 6),
        )
    finally:
        container.close()


def keyframe_index(path: Path) -> list[float]:
    """Keyframe times (seconds from the stream start, ascending) from one demux pass, no decoding."""
    path = Path(path)
    container = open_input(path)
    try:
        stream = video_stream(container, path)
        return [t for t, _ in scan_keyframes(container, stream)]
    finally:
        container.close()


def scan_keyframes(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> list[tuple[float, int]]:
    """(seconds from stream start, pts) of every keyframe packet, sorted; reads the stream once.

    A read error part-way (a truncated file) ends the scan: the keyframes before it are still valid.
    """
    tb = float(stream.time_base) if stream.time_base else 0.0
    origin = stream_origin_pts(stream)
    found: dict[int, float] = {}
    try:
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None and packet.is_keyframe:
                found[ts] = round((ts - origin) * tb, 6)
    except (av.FFmpegError, OSError) as e:
        log.debug("keyframe scan stopped early: %s", e)
    return sorted((t, pts) for pts, t in found.items())


def _classify(container: av.container.InputContainer, codec: str, path: Path) -> str:
    fmt = container.format.name
    if codec in IMAGE_CODECS and (fmt in _IMAGE_DEMUXERS or (fmt == "mjpeg" and _single_packet(path))):
        return "image"
    if codec not in VIDEO_CODECS:
        raise MediaError(f"unsupported codec {codec} in {fmt}")
    return "video"


def _single_packet(path: Path) -> bool:
    # A raw MJPEG stream holding a single picture is a JPEG image. Reads at most two packets, in a
    # container of its own (raw streams cannot always seek back).
    count = 0
    container = open_input(path)
    try:
        for packet in container.demux(video=0):
            if packet.size:
                count += 1
                if count > 1:
                    break
    except (av.FFmpegError, OSError):
        pass
    finally:
        container.close()
    return count == 1


def _decode_first_frame(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> tuple[int, int]:
    """Decode until the first frame comes out; its size. Proves the stream is really decodable."""
    error: Exception | None = None
    sent = skipped = 0
    try:
        for packet in container.demux(stream):
            if not sent and packet.size and not packet.is_keyframe and skipped < _LEADING_SKIP_PACKETS:
                skipped += 1
                continue
            # An empty packet is PyAV's end-of-stream marker: decoding it drains the decoder.
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                error = e  # a damaged packet: keep trying the next ones
                frames = []
            if frames:
                return frames[0].width, frames[0].height
            sent += 1
            if sent >= _FIRST_FRAME_PACKETS:
                break
    except (av.FFmpegError, OSError) as e:
        error = e
    detail = f" ({error})" if error else ""
    raise MediaError(f"{path.name}: no decodable video frame{detail}; the file may be truncated or corrupt")


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> tuple[float, int]:
    """(duration in seconds, packets counted or 0); see the module docstring for the rules."""
    tb = float(stream.time_base) if stream.time_base else 0.0
    origin = stream_origin_pts(stream)
    claimed: float | None = None
    if stream.duration and tb:
        claimed = stream.duration * tb
    elif container.duration:
        claimed = container.duration / av.time_base
    if claimed is not None and claimed > 0:
        seek_to = origin + max(0, int((claimed - _TAIL_S) / tb)) if tb else 0
        end_pts, _ = _scan_end(container, stream, seek_to)
        if end_pts is not None:
            measured = (end_pts - origin) * tb
            if abs(measured - claimed) <= _DURATION_TOLERANCE_S:
                return claimed, 0
            log.info(
                "header duration %.3f s disagrees with packets (%.3f s); using packets", claimed, measured
            )
            if measured > claimed:
                return measured, 0
    # No usable header duration, or the tail could not be read: one full demux pass, in a fresh container
    # (some inputs, raw elementary streams for one, cannot seek back to the start).
    fresh = open_input(path)
    try:
        end_pts, count = _scan_end(fresh, fresh.streams[stream.index], None)  # type: ignore[arg-type]
    finally:
        fresh.close()
    if end_pts is None:
        # Packets without timestamps (raw elementary streams): the caller derives it from count / fps.
        return max(claimed or 0.0, 0.0), count
    return max(0.0, (end_pts - origin) * tb), count


def _scan_end(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, from_pts: int | None
) -> tuple[int | None, int]:
    """Demux to the end, from ``from_pts`` (backing up to a keyframe) or from the current position if
    None: (max pts + duration, packets read)."""
    end: int | None = None
    count = 0
    try:
        if from_pts is not None:
            container.seek(from_pts, stream=stream, backward=True)
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                continue
            stop = ts + (packet.duration or 0)
            if end is None or stop > end:
                end = stop
    except (av.FFmpegError, OSError) as e:
        # A truncated file ends in a read error; the packets read before it are what is really there.
        log.debug("demux stopped early: %s", e)
    return end, count


def _fps(stream: av.video.stream.VideoStream, duration: float, frame_count: int) -> float:
    # Prefer the average rate (right for VFR); some muxers report their time base instead, so cap it.
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return float(rate)
    if frame_count and duration > 0:
        return frame_count / duration
    return 0.0


def _container_name(container: av.container.InputContainer, path: Path) -> str:
    # FFmpeg names demuxer families ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"): report the member that
    # the file extension or the MP4 brand identifies, else the family's first name.
    names = container.format.name.split(",")
    suffix = path.suffix.lower().lstrip(".")
    suffix = {"mkv": "matroska", "m4v": "mp4"}.get(suffix, suffix)
    if suffix in names:
        return suffix
    if "mov" in names:
        brand = container.metadata.get("major_brand", "").strip()
        return "mov" if brand == "qt" else "mp4"
    return names[0]


def _oriented_size(path: Path, width: int, height: int) -> tuple[int, int]:
    # Images are served EXIF-rotated (see sampler.load_image), so report the size after rotation.
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # PIL raises many types for odd files; FFmpeg already decoded it, so keep its size
        return width, height
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
