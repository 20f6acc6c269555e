"""Incidents to where users listen: webhooks (JSON, HMAC-signed, retried with backoff), MQTT (a topic per
rule) and Kafka (nv.Incident). Nothing here blocks the pipeline: a webhook is a task with a bounded
number in flight, in all and per receiver (beyond it, deliveries are dropped and counted; at shutdown
those in flight get a few seconds to finish), MQTT publishes through paho's own
network thread and queue, Kafka through the bus's bounded producer queue. Every outcome is counted
(rtvi_alert_deliveries_total{type,outcome}) and reported to `on_outcome` (the rule's stats)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import paho.mqtt.client as mqtt
from google.protobuf.message import Message

from rtvi import __version__
from rtvi.core.alerts.rules import KafkaAction, MqttAction, Rule, WebhookAction
from rtvi.core.alerts.targets import Refused, checked_address, checked_address_blocking, refusal
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.credentials import public_url
from rtvi.core.net import IPAddress, pinned
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import AlertSettings, HostAllowlist

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Rtvi-Signature"
MAX_WEBHOOKS_IN_FLIGHT = 1000
# Per receiver (host and port): a slow or dead one holds at most this many of the slots above, so the
# other receivers' incidents still go out.
MAX_WEBHOOKS_PER_HOST = 100
# At shutdown, webhooks in flight (or waiting to retry) get this long to finish before they are dropped.
SHUTDOWN_DRAIN_S = 5.0
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
MQTT_QUEUE = 1000  # messages paho keeps per broker while it is away
# (rule id, action type, outcome: delivered | failed | dropped)
OutcomeHook = Callable[[str, str, str], None]


def signature(secret: str, body: bytes) -> str:
    """The X-Rtvi-Signature value: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed by the secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _receiver(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port


def mqtt_topic(action: MqttAction, rule_id: str) -> str:
    return action.topic or f"rtvi/alerts/{rule_id}"


class _PinnedClient(mqtt.Client):
    """A paho client whose every connection (the first and each reconnection, which paho makes by itself)
    goes to an address `address()` has just checked: a rule's broker name cannot resolve to the service's
    own network after the rule was saved."""

    def __init__(self, address: Callable[[], IPAddress], where: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._address = address
        self._where = where

    def _create_socket_connection(self) -> socket.socket:
        try:
            ip = self._address()
        except Refused as exc:  # an OSError to paho: it counts a failed connection and tries again later
            log.warning("MQTT broker %s refused: %s", self._where, exc)
            raise ConnectionRefusedError(str(exc)) from None
        # The TLS server name stays the broker's name (paho wraps this socket with self._host).
        source = (self._bind_address, self._bind_port)
        return socket.create_connection((str(ip), self._port), self._connect_timeout, source)


class _MqttLink:
    """One broker: a paho client on its own network thread, reconnecting by itself. `address`: checks and
    pins each connection's address (a rule's own broker); None for the operator's RTVI_ALERT_MQTT_URL."""

    def __init__(
        self, url: str, on_acked: Callable[[Any], None], address: Callable[[], IPAddress] | None = None
    ) -> None:
        parts = urlsplit(url)
        self.where = public_url(url)
        options: dict[str, Any] = {
            "callback_api_version": mqtt.CallbackAPIVersion.VERSION2,
            "client_id": f"rtvi-{time.time_ns()}",
        }
        self.client = (
            mqtt.Client(**options) if address is None else _PinnedClient(address, self.where, **options)
        )
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            self.client.tls_set()
        self.client.max_queued_messages_set(MQTT_QUEUE)
        self.client.reconnect_delay_set(1, 30)
        self._lock = threading.Lock()
        self._waiting: dict[int, Any] = {}  # mid -> what on_acked gets
        self._early: set[int] = set()  # acknowledged before publish() returned its mid
        self._on_acked = on_acked
        self.client.on_publish = self._published
        default_port = 8883 if parts.scheme == "mqtts" else 1883
        self.client.connect_async(parts.hostname or "", parts.port or default_port)
        self.client.loop_start()

    def publish(self, topic: str, body: bytes, qos: int, retain: bool, context: Any) -> bool:
        info = self.client.publish(topic, body, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) or (
            info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0
        ):
            return False  # queue full, or QoS 0 while away (paho does not queue those)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                acked = True
            else:
                self._waiting[info.mid] = context
                acked = False
        if acked:
            self._on_acked(context)
        return True

    def _published(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        with self._lock:
            context = self._waiting.pop(mid, None)
            if context is None:
                self._early.add(mid)
                return
        self._on_acked(context)

    def idle(self) -> bool:
        """Nothing is waiting for the broker's acknowledgement."""
        with self._lock:
            return not self._waiting

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Deliveries:
    def __init__(
        self,
        settings: AlertSettings,
        metrics: Metrics,
        publisher: Callable[[], MessagePublisher | None],
        on_outcome: OutcomeHook,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.allowed = HostAllowlist.parse(settings.alert_allowed_hosts)
        self._publisher = publisher
        self._on_outcome = on_outcome
        self._http: httpx.AsyncClient | None = None
        self._tasks: dict[asyncio.Task[None], str] = {}  # webhook deliveries in flight -> their rule
        self._per_host: Counter[tuple[str, int | None]] = Counter()  # ... by receiver
        self._mqtt: dict[str, _MqttLink] = {}
        self._mqtt_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # paho's acknowledgements are counted there

    async def check(self, rule: Rule) -> str | None:
        """Why one of the rule's actions cannot be used, or None (on save: the targets' hosts)."""
        for action in rule.spec.actions:
            if isinstance(action, WebhookAction):
                why = await refusal(action.url, self.allowed)
                if why:
                    return f"webhook URL refused: {why}"
            elif isinstance(action, MqttAction):
                if action.url:
                    why = await refusal(action.url, self.allowed)
                    if why:
                        return f"MQTT broker refused: {why}"
                elif not self.settings.alert_mqtt_url:
                    return "an mqtt action needs its url, or RTVI_ALERT_MQTT_URL set"
            elif isinstance(action, KafkaAction):
                publisher = self._publisher()
                if publisher is None or not publisher.settings.kafka_bootstrap_servers.strip():
                    return "a kafka action needs KAFKA_BOOTSTRAP_SERVERS"
        return None

    def deliver(self, rule: Rule, body: bytes, message: Message, key: bytes, chunk_end: float) -> None:
        """Send one incident (`body`: its JSON; `message`: its nv.Incident) through each of the rule's
        actions; returns at once."""
        self._loop = asyncio.get_running_loop()
        for action in rule.spec.actions:
            if isinstance(action, WebhookAction):
                receiver = _receiver(action.url)
                if (
                    len(self._tasks) >= MAX_WEBHOOKS_IN_FLIGHT
                    or self._per_host[receiver] >= MAX_WEBHOOKS_PER_HOST
                ):
                    self._outcome(rule.id, "webhook", "dropped")
                    continue
                task = asyncio.create_task(self._webhook(rule.id, action, body, chunk_end))
                self._tasks[task] = rule.id
                self._per_host[receiver] += 1
                task.add_done_callback(functools.partial(self._webhook_done, receiver))
            elif isinstance(action, MqttAction):
                self._mqtt_publish(rule.id, action, body, chunk_end)
            else:
                self._kafka(rule.id, action, message, key, chunk_end)

    def _outcome(self, rule_id: str, kind: str, outcome: str, chunk_end: float | None = None) -> None:
        self.metrics.alert_deliveries.labels(kind, outcome).inc()
        if outcome == "delivered" and chunk_end is not None:
            self.metrics.alert_delivery_latency.observe(max(0.0, time.time() - chunk_end))
        self._on_outcome(rule_id, kind, outcome)

    # --- webhook ----------------------------------------------------------------------------------
    def _webhook_done(self, receiver: tuple[str, int | None], task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._per_host[receiver] -= 1
        if self._per_host[receiver] <= 0:
            del self._per_host[receiver]

    async def _webhook(self, rule_id: str, action: WebhookAction, body: bytes, chunk_end: float) -> None:
        if self._http is None:
            # No redirects (a 3xx is an answer, not a new target) and no proxy from the environment.
            self._http = httpx.AsyncClient(
                timeout=self.settings.alert_webhook_timeout_s, follow_redirects=False, trust_env=False
            )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"rtvi/{__version__}",
            "X-Rtvi-Rule-Id": rule_id,
        }
        if action.secret:
            headers[SIGNATURE_HEADER] = signature(action.secret, body)
        where = public_url(action.url)
        attempts = self.settings.alert_webhook_retries + 1
        for attempt in range(attempts):
            try:  # again, and the connection goes to the address checked: the name may point elsewhere now
                ip = await checked_address(action.url, self.allowed)
            except Refused as exc:
                log.warning("rule %s: webhook %s refused: %s", rule_id, where, exc)
                self._outcome(rule_id, "webhook", "failed")
                return
            target, host, extensions = pinned(action.url, ip)
            try:
                request = self._http.build_request(
                    "POST", target, content=body, headers=headers | host, extensions=extensions
                )
                response = await self._http.send(request)
                if response.status_code < 300:
                    self._outcome(rule_id, "webhook", "delivered", chunk_end)
                    return
                retry = response.status_code >= 500 or response.status_code == 429
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                retry, problem = True, type(exc).__name__
            if not retry or attempt == attempts - 1:
                log.warning(
                    "rule %s: webhook %s failed after %d attempt(s): %s", rule_id, where, attempt + 1, problem
                )
                self._outcome(rule_id, "webhook", "failed")
                return
            await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_START_S * 2**attempt))

    # --- MQTT -------------------------------------------------------------------------------------
    def _mqtt_publish(self, rule_id: str, action: MqttAction, body: bytes, chunk_end: float) -> None:
        url = action.url or self.settings.alert_mqtt_url
        try:
            link = self._mqtt_link(url)
            queued = link.publish(
                mqtt_topic(action, rule_id), body, action.qos, action.retain, (rule_id, chunk_end, action.qos)
            )
        except Exception as exc:  # a bad broker must not break the other actions
            log.warning("rule %s: MQTT publish to %s failed: %s", rule_id, public_url(url), exc)
            queued = False
        if not queued:
            self._outcome(rule_id, "mqtt", "failed")
        elif action.qos == 0:
            self._outcome(rule_id, "mqtt", "delivered", chunk_end)  # QoS 0 has no acknowledgement

    def _mqtt_link(self, url: str) -> _MqttLink:
        with self._mqtt_lock:
            link = self._mqtt.get(url)
            if link is None:
                # The operator's broker is trusted; a rule's own is checked on every connection.
                trusted = url == self.settings.alert_mqtt_url
                address = None if trusted else functools.partial(checked_address_blocking, url, self.allowed)
                link = self._mqtt[url] = _MqttLink(url, self._mqtt_acked, address)
            return link

    async def close_unused_mqtt(self, rules: list[Rule]) -> None:
        """Close the broker links that no rule uses any more (once their messages are acknowledged: a
        link still waiting is looked at again on the next reading of the rules)."""
        used = {
            a.url or self.settings.alert_mqtt_url
            for r in rules
            for a in r.spec.actions
            if isinstance(a, MqttAction)
        }
        with self._mqtt_lock:
            unused = [url for url, link in self._mqtt.items() if url not in used and link.idle()]
            links = [self._mqtt.pop(url) for url in unused]
        for link in links:
            await asyncio.to_thread(link.close)

    def _mqtt_acked(self, context: Any) -> None:
        """On paho's network thread: counted on the event loop, where the stats are read."""
        rule_id, chunk_end, qos = context
        loop = self._loop
        if qos > 0 and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._outcome, rule_id, "mqtt", "delivered", chunk_end)

    # --- Kafka ------------------------------------------------------------------------------------
    def _kafka(
        self, rule_id: str, action: KafkaAction, message: Message, key: bytes, chunk_end: float
    ) -> None:
        publisher = self._publisher()
        queued = publisher is not None and publisher.publish_incident(message, key, action.topic or None)
        self._outcome(rule_id, "kafka", "delivered" if queued else "failed", chunk_end if queued else None)

    async def close(self, drain_s: float = SHUTDOWN_DRAIN_S) -> None:
        """Give the webhooks in flight `drain_s` to finish; those still going are dropped (and counted)."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=drain_s)
            rules = [self._tasks[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for rule_id in rules:
                self._outcome(rule_id, "webhook", "dropped")
            if rules:
                log.warning("%d webhook deliveries still in flight at shutdown were dropped", len(rules))
        if self._http is not None:
            await self._http.aclose()
        with self._mqtt_lock:
            links, self._mqtt = list(self._mqtt.values()), {}
        for link in links:
            await asyncio.to_thread(link.close)
