"""Feeding the chunk index from the results path without ever slowing it down.

Results are offered to a bounded queue (never blocking; a full queue drops the chunk, counted in
`rtvi_index_chunks_dropped` and logged) and one thread drains it: it encodes each chunk's thumbnail (a
JPEG of one sampled frame, 320 pixels wide, in the source's aspect ratio) and writes the chunks in
batches. Chunks that come with a caption but no vector (the VLM service) get one here, from the text
encoder the service gives, so captions are embedded off the results path too. A failing write is kept
as the index's error for /v1/ready?detailed=true and counted in
`rtvi_index_errors_total`; generate requests never see it. The same thread applies the retention
(RTVI_INDEX_RETENTION_HOURS, RTVI_INDEX_MAX_GB) in bounded batches between writes.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

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
    """How long live chunks stay and how much the index may take on disk (0: no limit)."""

    max_age_s: float = 0.0
    max_disk_bytes: int = 0
    interval_s: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 or self.max_disk_bytes > 0


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
    ) -> None:
        self.index = index
        self.metrics = metrics
        self.embed_captions = embed_captions  # for chunks indexed by caption: their text's vector
        self.retention = retention
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
        if not self.retention.enabled:
            return None
        return max(0.0, self._next_sweep - time.monotonic())

    def _sweep(self) -> None:
        """Up to _SWEEP_STEPS batches: expired live chunks first, then the oldest while over the cap. The
        footprint is measured only for the cap (on Milvus a count is a request), and shown once at the end."""
        r = self.retention
        done = True
        try:
            for _ in range(_SWEEP_STEPS):
                removed = 0
                if r.max_age_s > 0:
                    removed = self.index.expire_live(time.time() - r.max_age_s, _EXPIRE_BATCH)
                    self.metrics.index_expired.labels(reason="age").inc(removed)
                if not removed and r.max_disk_bytes > 0:
                    footprint = self.index.footprint()
                    if (footprint.disk_bytes or 0) > r.max_disk_bytes:
                        removed = self.index.expire_live(None, _over_cap_batch(footprint, r.max_disk_bytes))
                        self.metrics.index_expired.labels(reason="size").inc(removed)
                if not removed:
                    break
            else:
                done = False  # more to remove: the next sweep comes after the next write
            self._observe(self.index.footprint())
        except Exception as exc:
            self._failed(exc)
        self._next_sweep = time.monotonic() + (0.0 if not done else r.interval_s)

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


def _over_cap_batch(footprint: Footprint, cap: int) -> int:
    """How many of the oldest entries to remove for the excess, estimated from the mean entry size (at
    least one, at most _EXPIRE_BATCH): the next step measures again."""
    excess = (footprint.disk_bytes or 0) - cap
    mean = (footprint.disk_bytes or 0) / max(1, footprint.entries)
    return max(1, min(_EXPIRE_BATCH, int(excess / max(mean, 1.0)) + 1))
