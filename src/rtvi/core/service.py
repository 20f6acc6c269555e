"""ServiceCore: the objects one running service shares, whatever its model stage.

It owns the asset store, the live streams and their jobs, the message bus and what publishes chunks on
it (bus/chunks.py), the search index (indexing.py), the cluster membership (membership.py), the decode
threads and the metrics, and holds the service's model stage once it has loaded. A service defines its
stage (see `ModelStage`); the core runs everything around it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Tracer

from rtvi.core.alerts.engine import AlertEngine
from rtvi.core.alerts.store import AlertStore
from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import AssetStore
from rtvi.core.bus.chunks import ChunkPublishing
from rtvi.core.bus.feed import ReadResult
from rtvi.core.bus.messages import IncidentMessage, ResultMessage
from rtvi.core.bus.publisher import BusTopics, MessagePublisher
from rtvi.core.index.thumbnails import thumbnail_store
from rtvi.core.indexing import SearchIndexing
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.hwaccel import decode_accel
from rtvi.core.media.types import MediaInfo
from rtvi.core.membership import ClusterMembership
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.events import ChunkDone, ChunkListener, notify
from rtvi.core.pipeline.file_job import FileJob
from rtvi.core.pipeline.live_jobs import LiveManager
from rtvi.core.pipeline.results import ChunkProcessor
from rtvi.core.streams import LiveStreams, M_contra, StreamMetadata
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import Unavailable
from rtvi.settings import Settings

log = logging.getLogger(__name__)

Out = TypeVar("Out")
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
    """The composition root of a running service: it builds the core's components and wires them once,
    here: finished chunks go to `listeners` (the results bus, the search index), removed assets leave
    the index, the cluster membership starts and stops the streams this replica owns."""

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
        self.decode_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
        self.publishing = ChunkPublishing(self.tracer)  # connected to the bus in start()
        self.indexing = SearchIndexing(
            settings.index, Path(settings.asset_storage_dir).resolve() / "index", self.metrics
        )
        self.store = AssetStore(
            settings.storage,
            settings.ingest,
            self.metrics.observe_download,
            on_removed=self.indexing.owner_removed,
            index=self.indexing,
        )
        # Rules in the registry's database; opened (scoring) by a stage that embeds live chunks.
        self.alerts = AlertEngine(
            settings.alerts,
            AlertStore(self.store.registry.engine, self.store.registry.secrets, settings.alert_max_incidents),
            thumbnail_store(
                settings.asset_store,
                settings.s3_endpoint_url,
                Path(settings.asset_storage_dir).resolve() / "alerts" / "thumbnails",
            ),
            self.metrics,
            lambda: self.publisher,
        )
        self.listeners: tuple[ChunkListener, ...] = (self.publishing, self.indexing, self.alerts)
        self.indexing.room = self.store.room_for_index
        # The manager reports through self.report_error, so the bus plugged in by start() is used.
        self.live = LiveManager(
            settings.live, self.metrics, self.report_error, config.failure_message, listeners=self.listeners
        )
        self.streams = LiveStreams(
            settings.live, self.store, self.live, self.metrics, self.report_error, config.stream_metadata
        )
        self.cluster = ClusterMembership(
            config.name,
            settings.cluster,
            self.streams,
            self.metrics,
            self.report_error,
            config.read_result,
            kafka_bootstrap=settings.kafka_bootstrap_servers,
            reader_queue=settings.live_subscriber_queue,
        )
        self.stage: ModelStage[Any] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.model_error: str | None = None
        self.model_loaded_at: float | None = None

    @property
    def publisher(self) -> MessagePublisher | None:
        """Results and errors on Kafka / Redis (spec §6): connected in start()."""
        return self.publishing.publisher

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.publishing.publisher = MessagePublisher(
            self.config.name,
            self.settings.bus,
            self.metrics,
            topics=self.config.topics,
            build_result=self.config.build_result,
            build_incident=self.config.build_incident,
        ).start()
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
        self.publishing.model = stage.model
        self.model_loaded_at = time.time()
        log.info("model %s loaded in %.1f s", stage.model.id, time.perf_counter() - start)
        self.streams.starter = stage
        await self.cluster.join(self.publisher)
        self.streams.resume_auto_started()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.cluster.leave()  # first: the others take this replica's cameras at once
        await self.live.shutdown()
        await self.alerts.close()
        if self.stage is not None:
            await self.stage.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        await self.indexing.close()
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

    def chunk_done(self, event: ChunkDone) -> None:
        """A finished file chunk to every listener (live jobs call them themselves); one failing does not
        keep the chunk from the others or from the response."""
        notify(self.listeners, event)

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
