"""Kafka producer that never blocks its caller and loses nothing a bounded outage can cost.

produce() only appends to librdkafka's in-memory queue (bounded by KAFKA_ASYNC_SEND_QUEUE_MAXSIZE); a
background thread serves delivery reports. While the broker is down librdkafka keeps the messages and
sends them when it returns, up to KAFKA_MESSAGE_TIMEOUT_MS. What cannot be queued (queue full) or
delivered (timeout, rejection) is counted in rtvi_bus_messages_{dropped,failed}_total and logged.

Recovery: an idempotent producer whose broker lost its producer state (a restarted single-node broker
with memory storage) retries forever with a producer id the broker no longer knows, and librdkafka
reports no error. So the poll thread watches for a stall (messages waiting, the broker reachable, no
delivery report for `stall_timeout_s`) and for fatal errors; either way it purges the old producer,
builds a new one (which gets a new producer id) and sends the purged messages again, counted in
rtvi_bus_producer_rebuilds_total. A message that was in flight may then arrive twice (at least once).
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


class _ReportedOnce(logging.Filter):
    """librdkafka logs every failed connection attempt (FAIL, twice a second while a broker is away, e.g.
    on a laptop with none); the sink's error callback reports the outage once and its end once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("FAIL ")


LIBRDKAFKA_LOG = logging.getLogger("rtvi.kafka.librdkafka")
LIBRDKAFKA_LOG.addFilter(_ReportedOnce())

_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
Pending = tuple[str, bytes, bytes | None, Headers | None, str]  # topic, value, key, headers, kind


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
        stall_timeout_s: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.metrics = metrics
        self._conf = producer_config(bootstrap, queue_maxsize, message_timeout_ms, idempotence, client_id)
        self._stall_timeout_s = stall_timeout_s
        # Guards the producer against a swap while a caller produces to it.
        self._lock = threading.Lock()
        self._producer = self._new_producer()
        self._purging = False
        self._resend: list[Pending] = []
        self._rebuild_wanted = False
        self._last_progress = time.monotonic()
        self._last_stall_check = 0.0
        self._rebuilds = metrics.bus_producer_rebuilds.labels("kafka")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._log_drop = RateLimitedLog(log, "Kafka send queue full, message dropped")
        self._log_fail = RateLimitedLog(log, "Kafka message not delivered")
        self._broker_away = False  # an outage is logged when it starts and when it ends, not per retry
        self._callbacks = {kind: self._delivery_callback(kind) for kind in ("result", "error", "incident")}
        self.last_error: str | None = None
        self._delivered_any = False  # a broker that never took a message is not waited for at shutdown

    def _new_producer(self) -> Producer:
        return Producer(self._conf, logger=LIBRDKAFKA_LOG, error_cb=self._on_error)

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
            with self._lock:
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
            self._last_progress = time.monotonic()
            if err is None:
                self._delivered_any = True
                if self._broker_away:
                    self._broker_away = False
                    log.info(
                        "Kafka broker %s reachable again: queued messages are being delivered", self.bootstrap
                    )
                published.inc()
                return
            if (self._purging and err.code() in _PURGED) or err.fatal():
                # Purged for a rebuild (or failed by a fatal error): sent again by the new producer.
                h = msg.headers()
                headers: Headers | None = list(h.items()) if isinstance(h, dict) else h
                self._resend.append((msg.topic() or "", msg.value() or b"", msg.key(), headers, kind))
                self._rebuild_wanted = self._rebuild_wanted or err.fatal()
                return
            failed.inc()
            self._log_fail(f"topic {msg.topic()}, key {msg.key()!r}: {err.str()}")

        return on_delivery

    def _on_error(self, err: KafkaError) -> None:
        # Broker transport errors are retried by librdkafka: they are reported, not fatal to messages.
        self.last_error = err.str()
        if err.fatal():
            log.error("Kafka producer fatal error (the producer will be rebuilt): %s", err.str())
            self._rebuild_wanted = True
        elif not self._broker_away:
            self._broker_away = True
            log.warning(
                "Kafka broker problem (%s): messages wait in the bounded queue (up to %s) until it answers; "
                "retried quietly, logged again when it does",
                err.str(),
                self._conf["queue.buffering.max.messages"],
            )
        else:
            log.debug("Kafka broker still away: %s", err.str())

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)
            if self._rebuild_wanted or self._stalled():
                self._rebuild()

    def _stalled(self) -> bool:
        """Messages wait, the broker answers, yet no delivery report came for stall_timeout_s."""
        now = time.monotonic()
        if len(self._producer) == 0:
            self._last_progress = now
            return False
        if now - self._last_progress < self._stall_timeout_s or now - self._last_stall_check < 1.0:
            return False
        self._last_stall_check = now
        try:
            self._producer.list_topics(timeout=1.0)
        except KafkaException:
            return False  # the broker is away: waiting is right
        return True

    def _rebuild(self) -> None:
        with self._lock:
            old = self._producer
            self._purging = True
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0.5)  # serves the purge reports: the messages land in self._resend
            self._purging = False
            self._producer = self._new_producer()
            pending, self._resend = self._resend, []
            for topic, value, key, headers, kind in pending:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._callbacks[kind]
                )
            self._rebuild_wanted = False
        self._last_progress = time.monotonic()
        self._rebuilds.inc()
        log.warning("Kafka producer rebuilt (stalled or fatal); %d queued messages sent again", len(pending))

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
        # Rt-vlm publishes to Kafka by default (seed 002): on a laptop with no broker, a shutdown must not
        # wait the full timeout for a broker that never answered.
        left = self._producer.flush(timeout if self._delivered_any else min(timeout, 1.0))
        if left:
            self.metrics.bus_failed.labels("kafka", "result").inc(left)
            log.error(
                "Kafka shutdown: %d messages not delivered within %.0f s (counted as failed)", left, timeout
            )
        return left
