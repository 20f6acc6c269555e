"""This replica's part in a cluster of replicas (RTVI_CLUSTER_BOOTSTRAP, docs/scale-out.md): it joins
the stream ownership (core/cluster.py) once the model has loaded, and serves the SSE readers of
cluster-run streams from the results topic (core/bus/feed.py), whichever replica decodes the camera."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rtvi.core.assets.registry import Asset
from rtvi.core.bus.feed import FeedReader, ReadResult, ResultsFeed
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.cluster import StreamOwnership
from rtvi.core.pipeline.results import ChunkProcessor
from rtvi.core.streams import LiveStreams
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import ClusterSettings, replica_name

log = logging.getLogger(__name__)


class ClusterMembership:
    """Nothing happens until `join` (and without RTVI_CLUSTER_BOOTSTRAP, nothing ever does)."""

    def __init__(
        self,
        service: str,
        settings: ClusterSettings,
        streams: LiveStreams,
        metrics: Metrics,
        report_error: Callable[[str, str], None],
        read_result: ReadResult | None,
        *,
        kafka_bootstrap: str,  # the results bus's brokers, read for the feed
        reader_queue: int,  # results a slow SSE reader may fall behind by (LIVE_SUBSCRIBER_QUEUE)
    ) -> None:
        self.service = service
        self.settings = settings
        self.kafka_bootstrap = kafka_bootstrap
        self.reader_queue = reader_queue
        self.streams = streams
        self.metrics = metrics
        self.report_error = report_error
        self.read_result = read_result  # nv.VisionLLM -> the chunk's output, for the feed
        self.feed: ResultsFeed | None = None  # with a Kafka results bus

    async def join(self, publisher: MessagePublisher | None) -> None:
        """Take part in the stream ownership; read the results topic for SSE when results go to Kafka."""
        s = self.settings
        if not s.cluster_bootstrap:
            return
        ownership = StreamOwnership(
            s, self.service, start=self.streams.start_owned, stop=self.streams.stop_owned
        )
        try:
            await self.streams.join_cluster(ownership)
        except Exception as exc:  # the service still serves files; its cameras wait for a healthy broker
            log.exception("could not join the cluster on %s", s.cluster_bootstrap)
            self.report_error("", f"Could not join the cluster: {exc}")
        else:
            log.info("replica %s joined the cluster (topic %s)", replica_name(s), ownership.topic)
        if publisher is not None and publisher.results_bus == "kafka" and self.read_result is not None:
            self.feed = ResultsFeed(
                {"bootstrap.servers": self.kafka_bootstrap}, publisher.results_topic, self.read_result
            )
        else:
            log.warning("no Kafka results bus: SSE readers of a cluster-run stream are served where it runs")

    def request_id_for(self, asset: Asset, processor: ChunkProcessor[Any]) -> str | None:
        """The request id of a cluster-run stream whose own inference computes what `processor` does:
        its readers are served from the results topic (the replica that decodes it may be another, and
        may change). None: the request runs here."""
        return self.streams.cluster_request_id(asset, processor) if self.feed is not None else None

    def reader(self, asset: Asset, request_id: str) -> FeedReader[Any]:
        """A reader of a cluster-run stream's chunks from the results topic (call on the event loop)."""
        assert self.feed is not None, "request_id_for first"
        return self.feed.subscribe(
            request_id,
            maxsize=self.reader_queue,
            running=lambda: self.streams.runs_in_cluster(asset.id),
            on_drop=lambda: self.metrics.live_dropped.labels(reason="slow_consumer").inc(),
        )

    def readers(self) -> int:
        return self.feed.readers() if self.feed is not None else 0

    async def leave(self) -> None:
        """First at shutdown: the other replicas take this one's cameras at once."""
        await self.streams.leave_cluster()
        if self.feed is not None:
            await asyncio.to_thread(self.feed.close)
