"""Live chunks read back from the results topic, so an SSE request for a cluster-run stream can land on
any replica (issue 13, docs/scale-out.md).

With RTVI_CLUSTER_BOOTSTRAP a camera is decoded by exactly one replica, which may change at any time (a
replica dies, another joins). Readers therefore never attach to a local job for such a stream: every
replica keeps one Kafka consumer on the results topic (no group: all partitions assigned, read from the
end), and hands each reader the chunks whose key, `{request_id}:{chunk_idx}`, carries its stream's request
id. A cluster-run stream's request id and chunk windows are the same on every replica, so a reader keeps
receiving chunks across a hand-over; a chunk published twice around one (same key) is delivered once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

from rtvi.core.bus.messages import chunk_result_of
from rtvi.core.bus.schema import schema_pb2 as nv
from rtvi.core.pipeline.live_jobs import DropOldestQueue
from rtvi.core.pipeline.results import ChunkResult

log = logging.getLogger(__name__)

Out = TypeVar("Out")
# A service's nv.VisionLLM -> its chunk output (the inverse of its ResultMessage).
ReadResult = Callable[[nv.VisionLLM], Any]
_RECENT = 64  # chunk indices a reader remembers, to drop a chunk published twice around a hand-over


class FeedReader(Generic[Out]):
    """One SSE reader of a stream's chunks from the results topic."""

    def __init__(
        self,
        feed: ResultsFeed,
        request_id: str,
        maxsize: int,
        running: Callable[[], bool],
        check_every_s: float,
        on_drop: Callable[[], None],
    ) -> None:
        self.request_id = request_id
        self._feed = feed
        self._queue: DropOldestQueue[ChunkResult[Out]] = DropOldestQueue(maxsize, on_drop)
        self._running = running
        self._check_every_s = check_every_s
        self._recent: OrderedDict[int, None] = OrderedDict()

    def offer(self, r: ChunkResult[Out]) -> None:
        if r.index in self._recent:
            return
        self._recent[r.index] = None
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self._queue.put(r)

    async def results(self) -> AsyncIterator[ChunkResult[Out]]:
        """Chunks as they are published, until the stream stops running (deleted, or its inference
        stopped) or the service shuts down. Leaving the iteration (client gone) unsubscribes."""
        try:
            while not self._feed.closed:
                try:
                    yield await asyncio.wait_for(self._queue.get(), self._check_every_s)
                except TimeoutError:
                    if not self._running():
                        return
        finally:
            self._feed.unsubscribe(self)


class ResultsFeed:
    """One consumer of the results topic per replica, started by its first reader."""

    def __init__(self, kafka_config: dict[str, Any], topic: str, read: ReadResult) -> None:
        self.topic = topic
        self._config = {
            **kafka_config,
            # librdkafka wants a group id even for assigned partitions; nothing is ever committed.
            "group.id": f"rtvi-feed-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
        self._read = read
        self._readers: dict[str, set[FeedReader[Any]]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the topic's partitions are assigned
        self.closed = False

    def subscribe(
        self,
        request_id: str,
        *,
        maxsize: int,
        running: Callable[[], bool],
        check_every_s: float = 2.0,
        on_drop: Callable[[], None] = lambda: None,
    ) -> FeedReader[Any]:
        """A reader of the chunks published under `request_id`, from now on (call on the event loop)."""
        reader: FeedReader[Any] = FeedReader(self, request_id, maxsize, running, check_every_s, on_drop)
        with self._lock:
            self._readers.setdefault(request_id, set()).add(reader)
            if self._thread is None:
                self._loop = asyncio.get_running_loop()
                self._thread = threading.Thread(target=self._run, name="rtvi-results-feed", daemon=True)
                self._thread.start()
        return reader

    def unsubscribe(self, reader: FeedReader[Any]) -> None:
        with self._lock:
            readers = self._readers.get(reader.request_id)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._readers[reader.request_id]

    def readers(self) -> int:
        with self._lock:
            return sum(map(len, self._readers.values()))

    def close(self, timeout: float = 5.0) -> None:
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the consumer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            self._assign(consumer)
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                self._dispatch(msg.key(), msg.value())
        except Exception:
            log.exception("the results feed stopped; live readers of cluster-run streams get no chunks")
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        """Every partition of the topic, from its end; waits for the topic to exist (first result)."""
        while not self._stop.is_set():
            try:
                topic = consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
            except KafkaException as exc:
                log.warning("results feed: no metadata for %s yet: %s", self.topic, exc)
                topic = None
            if topic is not None and topic.error is None and topic.partitions:
                # The end offsets now, not OFFSET_END (resolved later, on the first fetch): every chunk
                # published once `ready` is set reaches the readers.
                ends = {
                    p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), 10)
                    for p in topic.partitions
                }
                consumer.assign([TopicPartition(self.topic, p, high) for p, (_, high) in ends.items()])
                log.info("results feed: reading %s (%d partitions)", self.topic, len(topic.partitions))
                self.ready.set()
                return
            self._stop.wait(1.0)

    def _dispatch(self, key: bytes | None, value: bytes | None) -> None:
        request_id = (key or b"").decode(errors="replace").rpartition(":")[0]
        with self._lock:
            readers = list(self._readers.get(request_id, ()))
        if not readers or value is None or self._loop is None:
            return
        try:
            msg = nv.VisionLLM()
            msg.ParseFromString(value)
            result = chunk_result_of(msg, self._read(msg))
        except Exception:
            log.exception("results feed: a message of request %s could not be read", request_id)
            return
        for reader in readers:
            self._loop.call_soon_threadsafe(reader.offer, result)
