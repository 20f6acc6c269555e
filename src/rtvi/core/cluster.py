"""Live stream ownership over Kafka (RTVI_CLUSTER_BOOTSTRAP): which replica decodes which camera.

Every stream whose inference runs on its own (a CV registration with metadata, spec §3.4) is a record on
a compacted topic: key = stream id, value = b"run", a tombstone once it stops. The replicas of a service
form one consumer group on that topic, so Kafka gives each partition to exactly one of them, and a replica
runs exactly the streams of its partitions. A replica that dies (its session times out) or leaves (it
closes its consumer) triggers a rebalance: its partitions go to the others, which read them from the
beginning (compaction keeps the newest record of each stream) and start those streams. A replica that
joins takes partitions, and so cameras, from the others the same way. Offsets are never committed: the
state is the whole topic, re-read on every assignment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rtvi.settings import ClusterSettings

log = logging.getLogger(__name__)

RUN = b"run"
StreamHook = Callable[[str], None]  # called with a stream id on the consumer thread


def heartbeat_interval_ms(session_timeout_ms: int) -> int:
    """A tenth of the session timeout (at least 100 ms): how late a survivor may learn of a rebalance."""
    return max(100, session_timeout_ms // 10)


class StreamOwnership:
    def __init__(self, settings: ClusterSettings, service: str, start: StreamHook, stop: StreamHook) -> None:
        bootstrap = self.bootstrap = settings.cluster_bootstrap
        # RTVI_CLUSTER_TOPIC, else one topic per service: its replicas form one consumer group on it.
        self.topic = settings.cluster_topic or f"rtvi-{service}-streams"
        self.group = f"{self.topic}-owners"
        self.partitions = settings.cluster_partitions
        self.session_timeout_ms = settings.cluster_session_timeout_ms
        self._start = start
        self._stop = stop
        self._lock = threading.Lock()
        self._owned: dict[int, set[str]] = {}  # assigned partition -> the streams it says run
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})

    # --- what this replica runs -----------------------------------------------------------------
    def owned(self) -> set[str]:
        with self._lock:
            return set().union(*self._owned.values())

    def assigned_partitions(self) -> list[int]:
        with self._lock:
            return sorted(self._owned)

    # --- announcing ------------------------------------------------------------------------------
    def announce(self, stream_id: str, run: bool, timeout: float = 10.0) -> None:
        """Record that a stream runs (or no longer does); its owner, wherever it is, acts on it."""
        self._producer.produce(self.topic, key=stream_id.encode(), value=RUN if run else None)
        if self._producer.flush(timeout) > 0:
            raise KafkaException(f"the cluster topic {self.topic} did not take the record in {timeout} s")

    # --- membership ------------------------------------------------------------------------------
    def start(self) -> StreamOwnership:
        self._ensure_topic()
        self._thread = threading.Thread(target=self._run, name="rtvi-ownership", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Leave the group (the others take this replica's partitions at once) and stop its streams."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._producer.flush(timeout)

    def _ensure_topic(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        new = NewTopic(self.topic, self.partitions, config={"cleanup.policy": "compact"})
        for future in admin.create_topics([new]).values():
            try:
                future.result(15)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                    raise

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.session_timeout_ms,
                # A survivor hears of a rebalance at its next heartbeat: often, so that a dead replica's
                # cameras move soon after its session lapses (docs/scale-out.md, "Failover, measured").
                "heartbeat.interval.ms": heartbeat_interval_ms(self.session_timeout_ms),
                # A partition just assigned is read from its next fetch: a broker holds an idle fetch
                # this long (librdkafka's default, 500 ms, delayed every take-over by up to that).
                "fetch.wait.max.ms": 100,
                # Incremental rebalances: when a replica dies or joins, only the partitions that move
                # change hands; the others' cameras keep running.
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        try:
            while not self._closing.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    log.warning("cluster topic %s: %s", self.topic, msg.error())
                    continue
                self._apply(msg)
        except Exception:
            log.exception("the ownership consumer failed; this replica stops its streams")
        finally:
            self._release(None)
            consumer.close()  # leaves the group: a rebalance hands the partitions to the others

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            p.offset = OFFSET_BEGINNING  # the state is the whole (compacted) partition
        with self._lock:
            for p in partitions:
                self._owned.setdefault(p.partition, set())
        consumer.incremental_assign(partitions)  # cooperative: add these to what this replica has
        log.info("cluster: partitions %s of %s assigned here", [p.partition for p in partitions], self.topic)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release([p.partition for p in partitions])

    def _release(self, partitions: list[int] | None) -> None:
        """Stop the streams of `partitions` (None: of every partition held) and let them go."""
        with self._lock:
            partitions = list(self._owned) if partitions is None else partitions
            streams = [s for p in partitions for s in self._owned.pop(p, set())]
        for stream_id in streams:
            self._stop(stream_id)
        if partitions:
            log.info("cluster: partitions %s released (%d streams stopped here)", partitions, len(streams))

    def _apply(self, msg: Message) -> None:
        key, partition = msg.key(), msg.partition()
        if key is None or partition is None:
            return
        stream_id, run = key.decode(), msg.value() == RUN
        with self._lock:
            streams = self._owned.get(partition)
            if streams is None:  # a record fetched just before its partition was revoked
                return
            changed = (stream_id not in streams) if run else (stream_id in streams)
            (streams.add if run else streams.discard)(stream_id)
        if changed:
            (self._start if run else self._stop)(stream_id)
