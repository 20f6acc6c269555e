"""The error bus (spec §6.5): JSON {streamId, timestamp, type, source, event} by Redis PUBLISH to the channel
ERROR_MESSAGE_TOPIC, or on the Kafka topic of that name with header message_type=error and no key.

Neither path blocks the caller: Kafka goes into librdkafka's queue, Redis through RedisSink's queue.
Every error is also logged, so none is lost when no bus is configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from rtvi.core.bus.kafka import Headers, KafkaSink
from rtvi.core.bus.messages import MESSAGE_TYPE_ERROR, ErrorType, error_json
from rtvi.core.bus.redis import RedisItem, RedisSink

log = logging.getLogger(__name__)
ERROR_HEADERS: Headers = [("message_type", MESSAGE_TYPE_ERROR.encode())]

ErrorBusName = Literal["kafka", "redis"]


@dataclass(frozen=True, slots=True)
class ErrorBus:
    bus: ErrorBusName | None  # None: log only
    topic: str
    source: str  # HOSTNAME, else the service name
    kafka: KafkaSink | None = None
    redis: RedisSink | None = None

    def publish(self, stream_id: str, event: str, type_: ErrorType = "functional") -> bool:
        """Queue one error message; True when it was handed to a bus."""
        level = logging.ERROR if type_ == "critical" else logging.WARNING
        log.log(level, "%s error (stream %r): %s", type_, stream_id, event)
        payload = error_json(stream_id, event, type_, self.source)
        if self.bus == "redis" and self.redis is not None:
            return self.redis.send(RedisItem("publish", self.topic, payload, "error"))
        if self.bus == "kafka" and self.kafka is not None:
            return self.kafka.produce(self.topic, payload, headers=ERROR_HEADERS, kind="error")
        return False
