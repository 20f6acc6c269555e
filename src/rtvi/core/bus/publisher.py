"""MessagePublisher: the one object the service publishes through (results, text results, errors).

Routes (spec §6.1):
- results: MESSAGE_BUS=kafka or KAFKA_ENABLED=true -> Kafka topic MESSAGE_BUS_TOPIC (KAFKA_TOPIC);
  KAFKA_ENABLED unset -> the service's reference default (BusTopics.kafka_by_default: rt-vlm on);
  MESSAGE_BUS=redis -> Redis Stream of that name (XADD {REDIS_PAYLOAD_KEY: bytes}); else off.
- errors: ENABLE_REDIS_ERROR_MESSAGES=true or ERROR_BUS=redis -> Redis PUBLISH; ERROR_BUS=kafka, or
  ERROR_BUS empty while results go to Kafka -> Kafka; else logged only.
Kafka needs KAFKA_BOOTSTRAP_SERVERS; without it Kafka routes are off, with a warning.
All publish_* methods are thread-safe and never block on a broker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import Message

from rtvi.core.bus.error_bus import ErrorBus, ErrorBusName
from rtvi.core.bus.kafka import Headers, KafkaSink
from rtvi.core.bus.messages import (
    MESSAGE_TYPE_INCIDENT,
    MESSAGE_TYPE_VISION_LLM,
    ChunkContext,
    ErrorType,
    IncidentMessage,
    ResultMessage,
)
from rtvi.core.bus.redis import RedisItem, RedisSink
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import BusSettings, replica_name, service_source_name

log = logging.getLogger(__name__)
BusName = Literal["kafka", "redis"]
MessageKind = Literal["result", "incident"]
_HEADERS: dict[MessageKind, Headers] = {
    "result": [("message_type", MESSAGE_TYPE_VISION_LLM.encode())],
    "incident": [("message_type", MESSAGE_TYPE_INCIDENT.encode())],
}


@dataclass(frozen=True, slots=True)
class BusTopics:
    """A service's default topics (MESSAGE_BUS_TOPIC / ERROR_MESSAGE_TOPIC override them), and whether its
    results go to Kafka when neither KAFKA_ENABLED nor MESSAGE_BUS says (seed 002: rt-vlm, true)."""

    results: str
    errors: str
    kafka_by_default: bool = False

    @classmethod
    def for_service(cls, service: str) -> BusTopics:
        return cls(f"mdx-{service}", f"mdx-{service}-errors")


class MessagePublisher:
    """`build_result` turns (chunk context, the service's chunk output) into the message publish_chunk
    sends: the service's "result -> bus message"; `build_incident` into an nv.Incident, or None."""

    def __init__(
        self,
        service: str,
        settings: BusSettings,
        metrics: Metrics,
        *,
        topics: BusTopics | None = None,
        build_result: ResultMessage | None = None,
        build_incident: IncidentMessage | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self.build_result = build_result
        self.build_incident = build_incident
        self.source = service_source_name(service)
        # Which replica wrote a message (a header, outside the protobuf clients parse): with scale-out,
        # a camera's chunks can be traced to the replica that decoded them.
        replica: Headers = [("rtvi-replica", replica_name(settings).encode())]
        self._headers = {kind: [*headers, *replica] for kind, headers in _HEADERS.items()}
        topics = topics or BusTopics.for_service(service)
        self._lock = threading.Lock()
        self._kafka: KafkaSink | None = None
        self._redis: RedisSink | None = None
        s = settings
        kafka_enabled = topics.kafka_by_default if s.kafka_enabled is None else s.kafka_enabled
        results: BusName | None = "kafka" if s.message_bus == "kafka" or kafka_enabled else None
        if s.kafka_enabled is None and not s.message_bus and kafka_enabled:
            log.warning(
                "KAFKA_ENABLED is unset: results go to Kafka at %s, the reference's default for this "
                "service; without a broker they wait in a bounded queue (KAFKA_ASYNC_SEND_QUEUE_MAXSIZE) "
                "and readiness is unaffected. Set KAFKA_ENABLED=false to run without Kafka",
                s.kafka_bootstrap_servers or "(no KAFKA_BOOTSTRAP_SERVERS)",
            )
        if s.message_bus == "redis":
            results = "redis"
        errors: ErrorBusName | None = None
        if s.enable_redis_error_messages or s.error_bus == "redis":
            errors = "redis"
        elif s.error_bus == "kafka" or (s.error_bus == "" and results == "kafka"):
            errors = "kafka"
        self.results_bus = self._usable(results)
        self.results_topic = s.message_bus_topic or topics.results
        self._errors = self._error_bus(self._usable(errors), s.error_message_topic or topics.errors)

    # --- routes and sinks ------------------------------------------------------------------------
    def _usable(self, bus: BusName | None) -> BusName | None:
        if bus == "kafka" and not self.settings.kafka_bootstrap_servers.strip():
            log.warning("Kafka output requested but KAFKA_BOOTSTRAP_SERVERS is empty: Kafka output disabled")
            return None
        return bus

    def _sink(self, bus: BusName) -> KafkaSink | RedisSink:
        """The bus's sink, started on first use (so /v1/config can switch to a bus not used at start)."""
        with self._lock:
            s = self.settings
            if bus == "kafka":
                if self._kafka is None:
                    self._kafka = KafkaSink(
                        s.kafka_bootstrap_servers,
                        self.metrics,
                        queue_maxsize=s.kafka_queue_maxsize,
                        message_timeout_ms=s.kafka_message_timeout_ms,
                        idempotence=s.kafka_enable_idempotence,
                        client_id=self.source,
                    ).start()
                return self._kafka
            if self._redis is None:
                self._redis = RedisSink(
                    self.metrics,
                    host=s.redis_host,
                    port=s.redis_port,
                    db=s.redis_db,
                    password=s.redis_password,
                    queue_maxsize=s.redis_queue_maxsize,
                    payload_key=s.redis_payload_key,
                    stream_maxlen=s.redis_stream_maxlen,
                ).start()
            return self._redis

    def _error_bus(self, bus: ErrorBusName | None, topic: str) -> ErrorBus:
        kafka = self._sink("kafka") if bus == "kafka" else None
        redis = self._sink("redis") if bus == "redis" else None
        return ErrorBus(bus, topic, self.source, kafka=kafka, redis=redis)  # type: ignore[arg-type]

    def start(self) -> MessagePublisher:
        if self.results_bus is not None:
            self._sink(self.results_bus)  # connect now, not on the first chunk
        log.info(
            "message bus: results -> %s %s; errors -> %s %s",
            self.results_bus or "off",
            self.results_topic if self.results_bus else "",
            self._errors.bus or "log only",
            self._errors.topic if self._errors.bus else "",
        )
        return self

    @property
    def error_bus(self) -> ErrorBusName | None:
        return self._errors.bus

    @property
    def error_topic(self) -> str:
        return self._errors.topic

    @property
    def text_enabled(self) -> bool:
        return self.results_bus is not None and self.settings.enable_kafka_messages_for_text_input

    # --- publishing ------------------------------------------------------------------------------
    def publish_chunk(self, ctx: ChunkContext, output: object) -> bool:
        """One chunk's nv.VisionLLM on the results bus, and its nv.Incident when the service raises one
        (KAFKA_INCIDENT_TOPIC, on the same bus, same key); True when the result was queued. Files, live
        streams and text (ctx.text set; see text_enabled) all go through here."""
        bus, topic = self.results_bus, self.results_topic
        if bus is None or self.build_result is None:
            return False
        try:
            result = self.build_result(ctx, output)
            incident = self.build_incident(ctx, output, result) if self.build_incident is not None else None
            payload = result.SerializeToString()
        except Exception as exc:  # spec §6.5: protobuf build failures go to the error bus
            log.exception("building the bus message failed")
            self.publish_error(
                ctx.stream_id, f"Failed to build protobuf message for chunk {ctx.chunk_idx}: {exc}"
            )
            return False
        queued = self._send(bus, topic, payload, ctx.key, "result")
        if incident is not None:
            self._send(
                bus, self.settings.kafka_incident_topic, incident.SerializeToString(), ctx.key, "incident"
            )
        return queued

    def publish_incident(self, incident: Message, key: bytes, topic: str | None = None) -> bool:
        """An nv.Incident of an alert rule on Kafka (KAFKA_INCIDENT_TOPIC unless `topic`), whichever bus the
        results use: incidents are Kafka messages (spec §6.4). True when queued."""
        if not self.settings.kafka_bootstrap_servers.strip():
            return False
        topic = topic or self.settings.kafka_incident_topic
        return self._send("kafka", topic, incident.SerializeToString(), key, "incident")

    def _send(self, bus: BusName, topic: str, payload: bytes, key: bytes, kind: MessageKind) -> bool:
        sink = self._sink(bus)
        if isinstance(sink, KafkaSink):
            return sink.produce(topic, payload, key=key, headers=self._headers[kind], kind=kind)
        return sink.send(RedisItem("xadd", topic, payload, kind))

    def publish_error(self, stream_id: str, event: str, type: ErrorType = "functional") -> bool:
        """One §6.5 error message; type "critical" for start-up failures, "functional" otherwise."""
        try:
            return self._errors.publish(stream_id, event, type)
        except Exception:  # reporting an error must never raise into the code that failed
            log.exception("publishing an error message failed")
            return False

    def on_error(self, stream_id: str, message: str) -> None:
        """Adapter for ServiceCore.on_error(stream_id, message): a functional error."""
        self.publish_error(stream_id, message, "functional")

    # --- runtime configuration (POST /v1/config) -------------------------------------------------
    def configure(
        self, bus: BusName, topic: str, error_bus: ErrorBusName | None = None, error_topic: str | None = None
    ) -> list[str]:
        """Switch results (and optionally errors) to another bus/topic; returns warnings. Messages already
        queued still go to the old route; connection settings stay as configured at start-up."""
        warnings: list[str] = []
        if self._usable(bus) is None:
            warnings.append("KAFKA_BOOTSTRAP_SERVERS is empty: result output stays disabled")
            self.results_bus = None
        else:
            self._sink(bus)
            self.results_bus = bus
        self.results_topic = topic
        if error_bus is not None or error_topic is not None:
            new_bus = error_bus if error_bus is not None else self._errors.bus
            if new_bus is not None and self._usable(new_bus) is None:
                warnings.append("KAFKA_BOOTSTRAP_SERVERS is empty: errors are only logged")
                new_bus = None
            self._errors = self._error_bus(new_bus, error_topic or self._errors.topic)
        log.info(
            "message bus reconfigured: results -> %s %s; errors -> %s %s",
            self.results_bus,
            topic,
            self._errors.bus,
            self._errors.topic,
        )
        return warnings

    def create_topic(self, topic: str, partitions: int) -> str | None:
        """Best-effort Kafka topic creation; returns a warning on failure (blocks: call off the loop)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap_servers})
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(timeout=10)
        except Exception as exc:
            return f"Could not create topic {topic!r}: {exc}"
        return None

    # --- health and shutdown ---------------------------------------------------------------------
    def checks(self) -> dict[str, dict[str, Any]]:
        """Connectivity of the buses in use (blocking, a few seconds at most: call it off the event loop).
        They never make the service unready: results wait in the queue while a broker is away."""
        out: dict[str, dict[str, Any]] = {}
        kafka_role = [
            r for r, b in (("results", self.results_bus), ("errors", self._errors.bus)) if b == "kafka"
        ]
        redis_role = [
            r for r, b in (("results", self.results_bus), ("errors", self._errors.bus)) if b == "redis"
        ]
        if kafka_role and self._kafka is not None:
            c = self._kafka.check()
            out["kafka"] = {"healthy": c["connected"], "required": False, "used_for": kafka_role, **c}
            if "results" in kafka_role:
                out["kafka"]["topic"] = self.results_topic
        if redis_role and self._redis is not None:
            c = self._redis.check()
            out["redis"] = {"healthy": c["connected"], "required": False, "used_for": redis_role, **c}
        return out

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued within `timeout` s in all; the rest is counted as failed and logged."""
        deadline = time.monotonic() + timeout
        with self._lock:
            sinks: list[KafkaSink | RedisSink] = [s for s in (self._redis, self._kafka) if s is not None]
        for sink in sinks:
            sink.close(max(0.5, deadline - time.monotonic()))
