"""ServiceCore: the objects one running service shares, whatever its model stage.

It owns the asset store, the live streams and their jobs, the message bus, the decode threads and the
metrics, and holds the service's model stage once it has loaded. A service defines its stage (see
`ModelStage`); the core runs everything around it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from opentelemetry.trace import Tracer

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import AssetStore
from rtvi.core.bus.feed import FeedReader, ReadResult, ResultsFeed
from rtvi.core.bus.messages import IncidentMessage, ResultMessage, chunk_context
from rtvi.core.bus.publisher import BusTopics, MessagePublisher
from rtvi.core.cluster import StreamOwnership
from rtvi.core.credentials import public_url
from rtvi.core.index import open_chunk_index
from rtvi.core.index.base import IndexedChunk
from rtvi.core.index.writer import ChunkIndexer, EmbedTexts, PendingChunk
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.hwaccel import decode_accel
from rtvi.core.media.times import unix_to_iso
from rtvi.core.media.types import MediaInfo
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.file_job import FileJob
from rtvi.core.pipeline.live import LiveJob, LiveManager, ResultSink
from rtvi.core.pipeline.results import ChunkProcessor, ChunkResult
from rtvi.core.streams import LiveStreams, M_contra, StreamMetadata
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import Unavailable
from rtvi.settings import Settings, replica_name

log = logging.getLogger(__name__)

Out = TypeVar("Out")
# A chunk's output -> what the index keeps of it: its vector and caption. A caption without a vector is
# embedded by the index's caption encoder (see open_index); neither: not indexed.
IndexEntryOf = Callable[[Any], tuple["npt.NDArray[np.float32] | None", str | None]]
# A search's query (text, or an image as a data: URI) -> its vector, in the index's space.
QueryVector = Callable[[str | None, str | None], Awaitable["npt.NDArray[np.float32]"]]
# Shutdown waits this long for queued Kafka / Redis messages (the rest is counted as failed and logged).
BUS_FLUSH_TIMEOUT_S = 10.0


class ModelStage(Protocol[M_contra]):
    """A service's loaded model stage, as the core sees it. M_contra: the service's model of CV metadata
    (CoreConfig.stream_metadata)."""

    @property
    def model(self) -> ModelInfo: ...

    def live_processor(self, asset: Asset, metadata: M_contra) -> ChunkProcessor[Any] | None:
        """The processor of a stream whose CV registration asks for inference (its metadata, as the
        service's model, whose `requests_inference()` is true), or None when that metadata does not
        start this service's inference (rt-embed: metadata.model is not the loaded model). Raises
        RtviError for metadata that asks for inference but is invalid."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What a service tells the core about itself."""

    name: str
    topics: BusTopics
    build_result: ResultMessage  # a chunk's output -> its nv.VisionLLM message
    failure_message: str  # what a failed generation says first on the error bus
    # The service's model of CV registration metadata (spec §3.4): what /v1/stream/add validates, the
    # registry keeps for auto-started streams, and the stage's live_processor receives.
    stream_metadata: type[StreamMetadata]
    build_incident: IncidentMessage | None = None  # a chunk's output -> the nv.Incident it raises
    # nv.VisionLLM -> the chunk's output (build_result's inverse): SSE of cluster-run streams, read back
    # from the results topic on any replica (bus/feed.py).
    read_result: ReadResult | None = None


class ServiceCore:
    def __init__(
        self,
        config: CoreConfig,
        settings: Settings,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.tracer = tracer or trace.NoOpTracer()
        self.hwaccel = decode_accel(settings.hwaccel)
        self.started_at = time.time()
        self.store = AssetStore(settings, self.metrics.observe_download)
        self.decode_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
        # Results and errors on Kafka / Redis (spec §6): connected in start().
        self.publisher: MessagePublisher | None = None
        # The manager reports through self.report_error, so the bus plugged in by start() is used.
        self.live = LiveManager(settings, self.metrics, self.report_error, config.failure_message)
        self.streams = LiveStreams(
            settings, self.store, self.live, self.metrics, self.report_error, config.stream_metadata
        )
        self.stage: ModelStage[Any] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.model_error: str | None = None
        self.model_loaded_at: float | None = None
        self.indexer: ChunkIndexer | None = None
        self._index_entry_of: IndexEntryOf | None = None
        self.query_vector: QueryVector | None = None
        self.feed: ResultsFeed | None = None  # with RTVI_CLUSTER_BOOTSTRAP and a Kafka results bus

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        publisher = self.publisher = MessagePublisher(
            self.config.name,
            self.settings,
            self.metrics,
            topics=self.config.topics,
            build_result=self.config.build_result,
            build_incident=self.config.build_incident,
        ).start()
        # Always: POST /v1/config may switch a results bus on (or off) later, running jobs included.
        self.live.sinks.append(ResultSink(self._publish_live, lambda: publisher.results_bus is not None))
        if self.settings.asset_max_age_hours > 0:
            self._sweeper = asyncio.create_task(self._sweep_expired(), name="asset-ttl")

    async def _sweep_expired(self) -> None:
        """ASSET_MAX_AGE_HOURS: remove expired assets now and then (the cap is enforced on every add)."""
        while True:
            try:
                removed = await asyncio.to_thread(self.store.evict_expired)
                if removed:
                    log.info("storage policy: %d asset(s) past ASSET_MAX_AGE_HOURS removed", removed)
            except Exception:
                log.exception("the storage policy sweep failed")
            await asyncio.sleep(self.settings.asset_eviction_interval_s)

    async def load(self, load_stage: Callable[[ServiceCore], ModelStage[Any]]) -> None:
        """Load the model stage (in a thread); a failure is kept for health and the error bus."""
        try:
            start = time.perf_counter()
            log.info("loading the model; /v1/ready answers 200 once it is loaded")
            stage = await asyncio.to_thread(load_stage, self)
            await stage.start()
        except Exception as exc:
            log.exception("model failed to load")
            self.model_error = str(exc) or type(exc).__name__
            if self.publisher is not None:  # a pipeline that cannot start is critical (spec §6.5)
                self.publisher.publish_error("", f"Model failed to load: {self.model_error}", "critical")
            return
        self.stage = stage
        self.model_loaded_at = time.time()
        log.info("model %s loaded in %.1f s", stage.model.id, time.perf_counter() - start)
        self.streams.starter = stage
        if self.settings.cluster_bootstrap:
            await self._join_cluster()
        self.streams.resume_auto_started()

    async def _join_cluster(self) -> None:
        s = self.settings
        topic = s.cluster_topic or f"rtvi-{self.config.name}-streams"
        ownership = StreamOwnership(
            s.cluster_bootstrap,
            topic,
            group=f"{topic}-owners",
            partitions=s.cluster_partitions,
            session_timeout_ms=s.cluster_session_timeout_ms,
            start=self.streams.start_owned,
            stop=self.streams.stop_owned,
        )
        try:
            await self.streams.join_cluster(ownership)
        except Exception as exc:  # the service still serves files; its cameras wait for a healthy broker
            log.exception("could not join the cluster on %s", s.cluster_bootstrap)
            self.report_error("", f"Could not join the cluster: {exc}")
        else:
            log.info("replica %s joined the cluster (topic %s)", replica_name(s), topic)
        publisher = self.publisher
        if publisher is not None and publisher.results_bus == "kafka" and self.config.read_result is not None:
            self.feed = ResultsFeed(
                {"bootstrap.servers": s.kafka_bootstrap_servers},
                publisher.results_topic,
                self.config.read_result,
            )
        else:
            log.warning("no Kafka results bus: SSE readers of a cluster-run stream are served where it runs")

    def cluster_request_id(self, asset: Asset, processor: ChunkProcessor[Any]) -> str | None:
        """The request id of a cluster-run stream whose own inference computes what `processor` does:
        its readers are served from the results topic (the replica that decodes it may be another, and
        may change). None: the request runs here."""
        return self.streams.cluster_request_id(asset, processor) if self.feed is not None else None

    def cluster_reader(self, asset: Asset, request_id: str) -> FeedReader[Any]:
        """A reader of a cluster-run stream's chunks from the results topic (call on the event loop)."""
        assert self.feed is not None, "cluster_request_id first"
        return self.feed.subscribe(
            request_id,
            maxsize=self.settings.live_subscriber_queue,
            running=lambda: self.streams.runs_in_cluster(asset.id),
            on_drop=lambda: self.metrics.live_dropped.labels(reason="slow_consumer").inc(),
        )

    async def open_index(
        self,
        model_id: str,
        dim: int,
        entry_of: IndexEntryOf,
        query_vector: QueryVector,
        embed_captions: EmbedTexts | None = None,
    ) -> None:
        """Index every chunk from now on (RTVI_SEARCH_INDEX), in the collection of `model_id` and `dim`
        (`embed_captions`: how chunks that carry only a caption get their vector, on the index's thread).
        Loading the collection's vectors reads them all from disk: in a thread, not on the event loop."""
        if not self.settings.search_index or self.indexer is not None:
            return
        s = self.settings
        index = await asyncio.to_thread(
            open_chunk_index,
            self.store.storage.root / "index",
            model_id,
            dim,
            milvus_uri=s.milvus_uri,
            milvus_token=s.milvus_token,
        )
        self.indexer = ChunkIndexer(index, self.metrics, embed_captions=embed_captions).start()
        self._index_entry_of = entry_of
        self.query_vector = query_vector
        self.live.observers.append(self._index_live)
        self.store.on_removed.append(self.indexer.remove_owner)
        where = f"on Milvus {public_url(s.milvus_uri)}" if s.milvus_uri else "in SQLite"
        log.info("search index %s: %d chunk(s) of %s (%d-d)", where, len(index), model_id, dim)

    def index_file_chunk(
        self, asset: Asset, r: ChunkResult[Any], time: Callable[[float], str], base_ts: float | None
    ) -> None:
        """A file (or image) chunk into the index. `time` renders a chunk time as the API does; `base_ts`:
        the file's wall-clock start (its creation time) when known."""
        abs_start, abs_end = (None, None) if base_ts is None else (base_ts + r.start_s, base_ts + r.end_s)
        self._index(
            asset,
            f"{r.start_s:.3f}-{r.end_s:.3f}",
            False,
            r,
            time(r.start_s),
            time(r.end_s),
            abs_start,
            abs_end,
        )

    def _index_live(self, job: LiveJob[Any], r: ChunkResult[Any]) -> None:
        start, end = unix_to_iso(r.start_s), unix_to_iso(r.end_s)
        self._index(job.asset, f"{r.start_s:.3f}", True, r, start, end, r.start_s, r.end_s)

    def _index(
        self,
        asset: Asset,
        key: str,
        live: bool,
        r: ChunkResult[Any],
        start_time: str,
        end_time: str,
        abs_start: float | None,
        abs_end: float | None,
    ) -> None:
        if self.indexer is None or self._index_entry_of is None:
            return
        vector, caption = self._index_entry_of(r.output)
        if vector is None and not caption:
            return
        width, height = asset.meta.get("width"), asset.meta.get("height")
        chunk = IndexedChunk(
            owner_id=asset.id,
            key=key,
            live=live,
            source=asset.filename,
            chunk_idx=r.index,
            start_s=r.start_s,
            end_s=r.end_s,
            abs_start=abs_start,
            abs_end=abs_end,
            start_time=start_time,
            end_time=end_time,
            vector=vector,
            caption=caption,
        )
        aspect = width / height if isinstance(width, int) and isinstance(height, int) and height > 0 else None
        self.indexer.offer(PendingChunk(chunk, r.thumbnail, aspect))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.streams.leave_cluster()  # first: the others take this replica's cameras at once
        if self.feed is not None:
            await asyncio.to_thread(self.feed.close)
        await self.live.shutdown()
        if self.stage is not None:
            await self.stage.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        if self.indexer is not None:
            await asyncio.to_thread(self.indexer.close)
        if self.publisher is not None:
            # After the producers above stopped: what they published gets BUS_FLUSH_TIMEOUT_S to leave.
            await asyncio.to_thread(self.publisher.close, BUS_FLUSH_TIMEOUT_S)
        self.store.close()

    # --- for the services ---------------------------------------------------------------------
    def require_stage(self) -> ModelStage[Any]:
        if self.stage is None:
            if self.model_error:
                raise Unavailable(f"Model failed to load: {self.model_error}")
            raise Unavailable("The model is still loading; retry shortly")
        return self.stage

    def report_error(self, stream_id: str, message: str) -> None:
        """A failure the spec publishes on the error bus (spec §6.5); logged when no bus is configured."""
        try:
            if self.publisher is not None:
                self.publisher.on_error(stream_id, message)
            else:
                log.error("error event (stream %r): %s", stream_id, message)
        except Exception:  # reporting must never break the request that failed
            log.exception("error reporting failed")

    def file_job(
        self,
        processor: ChunkProcessor[Out],
        *,
        video: Asset | Path | None = None,
        probed: MediaInfo | None = None,
        params: ChunkParams | None = None,
        images: list[Path] | None = None,
        received_at: float | None = None,
        span_attributes: Mapping[str, str] | None = None,
    ) -> FileJob[Out]:
        """A job over a registered video, a video path, or images. A known duration (the asset's probe,
        or `probed` for a path) spares the job a second probe."""
        duration_s, fps = (probed.duration_s, probed.fps) if probed is not None else (None, None)
        codec = probed.codec if probed is not None else None
        if isinstance(video, Asset):
            duration_s, fps = video.meta.get("duration_s"), video.meta.get("fps")
            codec = video.meta.get("codec")
            video = self.store.media_path(video)
        return FileJob(
            processor=processor,
            decode_pool=self.decode_pool,
            metrics=self.metrics,
            video=video,
            params=params,
            duration_s=duration_s,
            fps=fps,
            images=images,
            received_at=received_at,
            tracer=self.tracer,
            span_attributes=span_attributes,
            # FORCE_SW_AV1_DECODER: an AV1 file decodes in software even when the others use NVDEC.
            hwaccel=None if self.settings.force_sw_av1_decoder and codec == "av1" else self.hwaccel,
        )

    def publish_result(
        self,
        asset: Asset,
        request_id: str,
        requested_model: str,
        r: ChunkResult[Any],
        base_ts: float,
        span_attributes: Mapping[str, str] | None = None,
    ) -> None:
        """One chunk on the results bus (spec §6.3), when one is configured. A file request's chunk is
        traced as a `publish` span (with the request's `span_attributes`); live chunks outlive the request
        that started them, so they are not traced."""
        publisher, stage = self.publisher, self.stage
        if publisher is None or publisher.results_bus is None or stage is None:
            return
        ctx = chunk_context(asset, request_id, stage.model, requested_model, r, base_ts)
        if span_attributes is None:
            publisher.publish_chunk(ctx, r.output)
            return
        with self.tracer.start_as_current_span(
            "publish", attributes={**span_attributes, "rtvi.chunk.index": r.index}
        ):
            publisher.publish_chunk(ctx, r.output)

    def _publish_live(self, job: LiveJob[Any], r: ChunkResult[Any]) -> None:
        # Once per chunk (not once per SSE reader); live chunk times are Unix seconds already.
        self.publish_result(job.asset, job.request_id, self.stage.model.id if self.stage else "", r, 0.0)
