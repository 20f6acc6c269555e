"""Feeding the chunk index from the results path without ever slowing it down.

Results are offered to a bounded queue (never blocking; a full queue drops the chunk, counted in
`rtvi_index_chunks_dropped` and logged) and one thread drains it: it encodes each chunk's thumbnail (a
JPEG of one sampled frame, 320 pixels wide, in the source's aspect ratio) and writes the chunks in
batches. Chunks that come with a caption but no vector (the VLM service) get one here, from the text
encoder the service gives, so captions are embedded off the results path too. A failing write is kept
as the index's error for /v1/ready?detailed=true and counted in
`rtvi_index_errors_total`; generate requests never see it. The same thread applies the retention
(RTVI_INDEX_RETENTION_HOURS and _BY_STREAM, RTVI_INDEX_THUMBNAIL_RETENTION_HOURS, RTVI_INDEX_MAX_GB) in
bounded batches between writes.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from PIL import Image

from rtvi.core.index.base import ChunkIndex, Footprint, IndexedChunk
from rtvi.core.media.types import Frame
from rtvi.core.telemetry.metrics import Metrics

EmbedTexts = Callable[[Sequence[str]], npt.NDArray[np.float32]]
log = logging.getLogger(__name__)

# Bounded in chunks and, by shrinking the frames they carry (see offer), in bytes: ~180 MB at most.
MAX_PENDING = 256
_BATCH = 64
THUMBNAIL_WIDTH = 320
_STOP = object()


# Retention removes this many entries per step, and at most _SWEEP_STEPS steps between two writes, so
# neither a long backlog of expired chunks nor a lowered cap stalls indexing.
_EXPIRE_BATCH = 1000
_SWEEP_STEPS = 10


@dataclass(frozen=True, slots=True)
class Retention:
    """How long live chunks stay, by default and for some streams, how long their thumbnails stay, and
    how much the index may take on disk (0: no limit)."""

    max_age_s: float = 0.0
    by_stream: Mapping[str, float] = field(default_factory=dict)  # stream id -> max age, s (0: keep)
    thumbnail_age_s: float = 0.0
    max_disk_bytes: int = 0
    interval_s: float = 60.0

    @property
    def enabled(self) -> bool:
        ages = (self.max_age_s, self.thumbnail_age_s, *self.by_stream.values())
        return any(age > 0 for age in ages) or self.max_disk_bytes > 0


@dataclass(frozen=True, slots=True)
class PendingChunk:
    chunk: IndexedChunk
    frame: Frame | None = None  # the thumbnail's frame, as the model got it
    aspect: float | None = None  # the source's width / height (model frames may be stretched)


def thumbnail_jpeg(frame: Frame, aspect: float | None) -> bytes:
    image = Image.fromarray(frame)
    ratio = aspect if aspect and aspect > 0 else image.width / max(1, image.height)
    size = (THUMBNAIL_WIDTH, max(1, round(THUMBNAIL_WIDTH / ratio)))
    out = io.BytesIO()
    image.resize(size, Image.Resampling.BILINEAR).save(out, format="JPEG", quality=80)
    return out.getvalue()


class ChunkIndexer:
    def __init__(
        self,
        index: ChunkIndex,
        metrics: Metrics,
        max_pending: int = MAX_PENDING,
        embed_captions: EmbedTexts | None = None,
        retention: Retention = Retention(),
        room: Callable[[], int | None] | None = None,
    ) -> None:
        self.index = index
        self.metrics = metrics
        self.embed_captions = embed_captions  # for chunks indexed by caption: their text's vector
        self.retention = retention
        # The bytes the asset storage cap (MAX_ASSET_STORAGE_SIZE_GB) leaves the index beside the assets
        # (None: no cap): a second size limit, applied like RTVI_INDEX_MAX_GB.
        self.room = room
        self._next_sweep = time.monotonic()  # the first sweep at once: a restart may find a backlog
        self.error: str | None = None
        self._queue: queue.Queue[object] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="chunk-indexer", daemon=True)
        self._dropped_logged = False
        self._observe(index.footprint())

    def start(self) -> ChunkIndexer:
        self._thread.start()
        return self

    def offer(self, pending: PendingChunk) -> None:
        """Queue a chunk for the index; never blocks. A frame more than twice the thumbnail's width is
        subsampled first (a strided copy, ~0.2 ms for 720p), so the queue holds no full-size frames."""
        frame = pending.frame
        step = frame.shape[1] // (2 * THUMBNAIL_WIDTH) if frame is not None else 0
        if frame is not None and step > 1:
            pending = replace(pending, frame=np.ascontiguousarray(frame[::step, ::step]))
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self.metrics.index_dropped.inc()
            if not self._dropped_logged:  # once per burst: the counter has the total
                log.warning("search index queue full (%d chunks): chunks are not being indexed", MAX_PENDING)
                self._dropped_logged = True

    def remove_owner(self, owner_id: str) -> None:
        """A deleted or evicted file or stream: its entries and thumbnails go (synchronously)."""
        try:
            removed = self.index.remove_owner(owner_id)
        except Exception as exc:
            self._failed(exc)
            return
        if removed:
            log.info("search index: %d chunk(s) of %s removed", removed, owner_id)
        self.metrics.index_size.set(len(self.index))

    def free_disk(self, nbytes: int) -> int:
        """Remove the oldest live chunks until `nbytes` of the index's footprint are freed, or no live
        chunk is left (an upload that needs room under the storage cap). On the caller's thread: the
        index is thread-safe. -> bytes freed."""
        first = self.index.footprint()
        target = (first.disk_bytes or 0) - nbytes
        try:
            _, last = self._shrink_to(target, _SWEEP_STEPS * 10)
            return (first.disk_bytes or 0) - (last.disk_bytes or 0)
        finally:
            self.metrics.index_size.set(len(self.index))

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self.index.close()

    def _run(self) -> None:
        """Write what is queued in batches of up to _BATCH, until _STOP; apply the retention between
        batches, every interval (sooner while a sweep has more to remove)."""
        while True:
            try:
                item = self._queue.get(timeout=self._until_sweep())
            except queue.Empty:
                item = None
            if self._until_sweep() == 0:
                self._sweep()
            if item is None:
                continue
            batch: list[PendingChunk] = []
            while isinstance(item, PendingChunk):
                batch.append(item)
                if len(batch) >= _BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write(batch)
            if item is _STOP:
                return

    def _write(self, batch: list[PendingChunk]) -> None:
        if not batch:
            return
        try:
            chunks = self._with_vectors([self._with_thumbnail(p) for p in batch])
            self.index.upsert(chunks)
        except Exception as exc:
            self._failed(exc)
            return
        self.error = None
        self._dropped_logged = False
        self.metrics.index_written.inc(len(chunks))
        self.metrics.index_size.set(len(self.index))

    # --- retention ----------------------------------------------------------------------------------
    def _until_sweep(self) -> float | None:
        """Seconds to the next retention sweep (None: no retention)."""
        if not self.retention.enabled and self.room is None:
            return None
        return max(0.0, self._next_sweep - time.monotonic())

    def _sweep(self) -> None:
        """Up to _SWEEP_STEPS steps of bounded batches: expired live chunks first, then the oldest while
        over the cap, then thumbnails past their age. The footprint is measured only for the cap (on
        Milvus a count is a request), and shown once at the end."""
        done = True
        try:
            for _ in range(_SWEEP_STEPS):
                if not self._step(time.time()):
                    break
            else:
                done = False  # more to remove: the next sweep comes after the next write
            self._observe(self.index.footprint())
        except Exception as exc:
            self._failed(exc)
        self._next_sweep = time.monotonic() + (0.0 if not done else self.retention.interval_s)

    def _cap(self) -> int | None:
        """The smaller of RTVI_INDEX_MAX_GB and what the asset storage cap leaves (None: neither)."""
        caps = [self.retention.max_disk_bytes] if self.retention.max_disk_bytes > 0 else []
        room = self.room() if self.room is not None else None
        caps += [] if room is None else [room]
        return min(caps) if caps else None

    def _shrink_to(self, cap: int, steps: int) -> tuple[int, Footprint]:
        """Up to `steps` batches of the oldest live chunks while the footprint is over `cap`. -> (entries
        removed, the footprint after)."""
        footprint = self.index.footprint()
        total = 0
        for _ in range(steps):
            if (footprint.disk_bytes or 0) <= cap:
                break
            removed = self.index.expire_live(None, _EXPIRE_BATCH, max_bytes=(footprint.disk_bytes or 0) - cap)
            self.metrics.index_expired.labels(reason="size").inc(removed)
            if not removed:
                break
            total += removed
            footprint = self.index.footprint()
        return total, footprint

    def _step(self, now: float) -> int:
        """One batch of each limit that applies. -> entries removed or thumbnails dropped."""
        r = self.retention
        removed = 0
        if r.max_age_s > 0:  # every stream without its own limit
            removed += self.index.expire_live(now - r.max_age_s, _EXPIRE_BATCH, excluding=list(r.by_stream))
        for stream_id, age in r.by_stream.items():
            if age > 0:
                removed += self.index.expire_live(now - age, _EXPIRE_BATCH, owners=[stream_id])
        self.metrics.index_expired.labels(reason="age").inc(removed)
        cap = self._cap() if not removed else None
        if cap is not None:
            removed, _ = self._shrink_to(cap, 1)
        dropped = 0
        if r.thumbnail_age_s > 0:
            dropped = self.index.drop_thumbnails(now - r.thumbnail_age_s, _EXPIRE_BATCH)
            self.metrics.index_thumbnails_dropped.inc(dropped)
        return removed + dropped

    def _observe(self, footprint: Footprint) -> None:
        self.metrics.index_size.set(footprint.entries)
        self.metrics.index_disk_bytes.set(footprint.disk_bytes or 0)
        self.metrics.index_memory_bytes.set(footprint.memory_bytes)

    def _with_thumbnail(self, pending: PendingChunk) -> IndexedChunk:
        if pending.frame is None:
            return pending.chunk
        return replace(pending.chunk, thumbnail_jpeg=thumbnail_jpeg(pending.frame, pending.aspect))

    def _with_vectors(self, chunks: list[IndexedChunk]) -> list[IndexedChunk]:
        """Embed, in one call, the captions of the chunks that came without a vector."""
        missing = [i for i, c in enumerate(chunks) if c.vector is None]
        if not missing:
            return chunks
        if self.embed_captions is None:
            raise ValueError("a chunk without a vector, and no caption encoder")
        vectors = self.embed_captions([chunks[i].caption or "" for i in missing])
        for i, vector in zip(missing, vectors, strict=True):
            chunks[i] = replace(chunks[i], vector=vector)
        return chunks

    def _failed(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.metrics.index_errors.inc()
        log.error("search index write failed: %s", self.error)
