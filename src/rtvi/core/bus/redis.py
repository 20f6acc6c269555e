"""Redis output off the request path: a bounded queue drained by one thread (PUBLISH for errors, XADD for
results on MESSAGE_BUS=redis). A Redis outage is retried for up to RETRY_FOR_S per message, in order;
what still fails, or does not fit in the queue, is counted and logged."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis

from rtvi.core.bus.kafka import RateLimitedLog
from rtvi.core.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
RETRY_FOR_S = 30.0
TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class RedisItem:
    op: Literal["publish", "xadd"]
    target: str  # channel or stream name
    payload: bytes
    kind: str  # result | error (metrics label)


class RedisSink:
    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        db: int = 0,
        password: str = "",
        queue_maxsize: int = 1024,
        payload_key: str = "metadata",
        stream_maxlen: int = 10000,
    ) -> None:
        self.metrics = metrics
        self.address = f"{host}:{port}/{db}"
        self.payload_key = payload_key
        self.stream_maxlen = stream_maxlen
        self._client = redis.Redis(
            host=host,
            port=port,
            db=db,
            password=password or None,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
        )
        self._queue: queue.Queue[RedisItem | None] = queue.Queue(maxsize=queue_maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-publish", daemon=True)
        self._log_drop = RateLimitedLog(log, "Redis send queue full, message dropped")
        self._log_fail = RateLimitedLog(log, "Redis message not delivered")
        self.last_error: str | None = None
        for kind in ("result", "error"):  # exported as 0 from the start
            for counter in (metrics.bus_published, metrics.bus_failed, metrics.bus_dropped):
                counter.labels("redis", kind)

    def start(self) -> RedisSink:
        self._thread.start()
        return self

    def send(self, item: RedisItem) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.metrics.bus_dropped.labels("redis", item.kind).inc()
            self._log_drop(f"{item.op} {item.target}, {self._queue.qsize()} messages waiting")
            return False
        return True

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver(item)

    def _deliver(self, item: RedisItem) -> None:
        deadline = time.monotonic() + RETRY_FOR_S
        delay = 0.1
        while True:
            try:
                if item.op == "publish":
                    self._client.publish(item.target, item.payload)
                else:
                    self._client.xadd(
                        item.target,
                        {self.payload_key: item.payload},
                        maxlen=self.stream_maxlen,
                        approximate=True,
                    )
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.last_error = str(exc)
                # Give up early at shutdown: close() bounds the whole flush.
                if time.monotonic() + delay > deadline or self._stop.is_set():
                    break
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except redis.RedisError as exc:
                self.last_error = str(exc)
                break
            self.metrics.bus_published.labels("redis", item.kind).inc()
            return
        self.metrics.bus_failed.labels("redis", item.kind).inc()
        self._log_fail(f"{item.op} {item.target}: {self.last_error}")

    def check(self) -> dict[str, Any]:
        """Ping Redis (blocks up to TIMEOUT_S: call it off the event loop)."""
        out: dict[str, Any] = {"address": self.address, "queued": self.queued}
        try:
            self._client.ping()
        except redis.RedisError as exc:
            return {**out, "connected": False, "error": str(exc)}
        return {**out, "connected": True}

    def close(self, timeout: float = 10.0) -> int:
        """Send what is queued for up to `timeout` s; returns how many were left (counted as failed)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # a full queue still ends: the worker gets _stop below
            self._queue.put(None, timeout=timeout)
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left += 1
                self.metrics.bus_failed.labels("redis", item.kind).inc()
        if left:
            log.error("Redis shutdown: %d messages not sent within %.0f s (counted as failed)", left, timeout)
        self._client.close()
        return left
