"""Kafka producer that never blocks its caller and loses nothing a bounded outage can cost.

produce() only appends to librdkafka's in-memory queue (bounded by KAFKA_ASYNC_SEND_QUEUE_MAXSIZE); a
background thread serves delivery reports. While the broker is down librdkafka keeps the messages and
sends them when it returns, up to KAFKA_MESSAGE_TIMEOUT_MS. What cannot be queued (queue full) or
delivered (timeout, rejection) is counted in rtvi_bus_messages_{dropped,failed}_total and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from rtvi.core.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
Headers = list[tuple[str, str | bytes | None]]
LOG_EVERY_S = 10.0  # repeated drop / failure logs are summarised at most this often


class RateLimitedLog:
    """Logs the first occurrence at once, then a count at most every LOG_EVERY_S: never silent, no flood."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger, self.what = logger, what
        self._lock = threading.Lock()
        self._suppressed = 0
        self._last = 0.0

    def __call__(self, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < LOG_EVERY_S:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        more = f" (+{suppressed} more since the last report)" if suppressed else ""
        self.logger.warning("%s: %s%s", self.what, detail, more)


def producer_config(
    bootstrap: str, queue_maxsize: int, message_timeout_ms: int, idempotence: bool, client_id: str
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        # Reference settings (spec §6.1): acks=all, idempotence, one request in flight, 60 s request timeout.
        "acks": "all",
        "enable.idempotence": idempotence,
        "max.in.flight.requests.per.connection": 1,
        "request.timeout.ms": 60_000,
        # The reference retries 3 times; we retry until message.timeout.ms so an outage loses nothing.
        "message.send.max.retries": 2_147_483_647,
        "message.timeout.ms": message_timeout_ms,
        "queue.buffering.max.messages": queue_maxsize,
        "linger.ms": 5,
        # Reconnect within a second of the broker's return instead of librdkafka's 10 s backoff ceiling.
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }


class KafkaSink:
    def __init__(
        self,
        bootstrap: str,
        metrics: Metrics,
        *,
        queue_maxsize: int = 1024,
        message_timeout_ms: int = 300_000,
        idempotence: bool = True,
        client_id: str = "rtvi",
    ) -> None:
        self.bootstrap = bootstrap
        self.metrics = metrics
        conf = producer_config(bootstrap, queue_maxsize, message_timeout_ms, idempotence, client_id)
        self._producer = Producer(
            conf, logger=logging.getLogger("rtvi.kafka.librdkafka"), error_cb=self._on_error
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._log_drop = RateLimitedLog(log, "Kafka send queue full, message dropped")
        self._log_fail = RateLimitedLog(log, "Kafka message not delivered")
        self._log_broker = RateLimitedLog(log, "Kafka broker problem (messages stay queued)")
        self._callbacks = {kind: self._delivery_callback(kind) for kind in ("result", "error", "incident")}
        self.last_error: str | None = None

    def start(self) -> KafkaSink:
        self._thread.start()
        return self

    # --- sending ---------------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        kind: str = "result",
    ) -> bool:
        """Queue one message; False (counted and logged) when it could not be queued."""
        try:
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=self._callbacks[kind]
            )
        except BufferError:
            self.metrics.bus_dropped.labels("kafka", kind).inc()
            self._log_drop(f"topic {topic}, key {key!r}, {len(self._producer)} messages waiting")
            return False
        except KafkaException as exc:  # e.g. a fatal producer error or an invalid topic name
            self.metrics.bus_failed.labels("kafka", kind).inc()
            self._log_fail(f"topic {topic}, key {key!r}: {exc}")
            return False
        return True

    def _delivery_callback(self, kind: str) -> Callable[[KafkaError | None, Message], None]:
        published = self.metrics.bus_published.labels("kafka", kind)
        failed = self.metrics.bus_failed.labels("kafka", kind)
        self.metrics.bus_dropped.labels("kafka", kind)  # exported as 0 from the start, not on first drop

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                published.inc()
                return
            failed.inc()
            self._log_fail(f"topic {msg.topic()}, key {msg.key()!r}: {err.str()}")

        return on_delivery

    def _on_error(self, err: KafkaError) -> None:
        # Broker transport errors are retried by librdkafka: they are reported, not fatal to messages.
        self.last_error = err.str()
        if err.fatal():
            log.error("Kafka producer fatal error: %s", err.str())
        else:
            self._log_broker(err.str())

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    # --- state -----------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Messages waiting for the broker (or for their delivery report)."""
        return len(self._producer)

    def check(self, timeout: float = 2.0) -> dict[str, Any]:
        """Broker connectivity by a metadata request (blocks up to `timeout`: call it off the event loop)."""
        out: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "queued": self.queued}
        try:
            md = self._producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            return {**out, "connected": False, "error": str(exc.args[0].str() if exc.args else exc)}
        return {**out, "connected": True, "brokers": len(md.brokers)}

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued for up to `timeout` s; returns (and logs) how many were left undelivered."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        left = self._producer.flush(timeout)
        if left:
            self.metrics.bus_failed.labels("kafka", "result").inc(left)
            log.error(
                "Kafka shutdown: %d messages not delivered within %.0f s (counted as failed)", left, timeout
            )
        return left
