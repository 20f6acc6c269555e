"""Alert deliveries (core/alerts/delivery.py) against a real broker: Debian's mosquitto."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from rtvi.core.alerts import delivery
from rtvi.core.alerts.delivery import Deliveries
from rtvi.core.alerts.rules import Rule, RuleSpec
from rtvi.core.bus.schema import ext_pb2
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import Settings
from tests.alert_receivers import Mosquitto, MqttListener, WebhookReceiver


def test_a_broker_link_no_rule_uses_any_more_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    listener = MqttListener(broker.port, "rtvi/#")
    monkeypatch.setenv("RTVI_ALERT_MQTT_URL", broker.url)
    outcomes: list[tuple[str, str, str]] = []
    deliveries = Deliveries(Settings().alerts, Metrics(), lambda: None, lambda *o: outcomes.append(o))
    rule = Rule("r1", RuleSpec(name="r", query="a person", actions=[{"type": "mqtt"}]), None, None, 0.0, 0.0)

    async def run() -> None:
        deliveries.deliver(rule, b'{"n": 1}', ext_pb2.Incident(), b"cam", time.time())
        for _ in range(100):  # QoS 1: delivered once the broker acknowledges it
            if ("r1", "mqtt", "delivered") in outcomes:
                break
            await asyncio.sleep(0.05)
        assert ("r1", "mqtt", "delivered") in outcomes
        link = deliveries._mqtt[broker.url]
        await deliveries.close_unused_mqtt([rule])  # still used: kept, connected
        assert deliveries._mqtt == {broker.url: link} and link.client.is_connected()
        await deliveries.close_unused_mqtt([])  # the rule is gone: its link goes
        assert deliveries._mqtt == {} and not link.client.is_connected()
        await deliveries.close()

    try:
        asyncio.run(run())
        assert [p for _, _, p in listener.messages] == [b'{"n": 1}']
    finally:
        listener.stop()
        broker.stop()


def test_a_rules_own_broker_is_checked_on_every_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule's broker passed the check when the rule was saved; paho connects (and reconnects) by itself
    later, when the name may point elsewhere (DNS rebinding). Each connection is checked again and goes to
    the checked address: a loopback broker is refused unless RTVI_ALERT_ALLOWED_HOSTS admits it."""
    broker = Mosquitto(tmp_path)
    broker.start()
    listener = MqttListener(broker.port, "rtvi/#")
    monkeypatch.delenv("RTVI_ALERT_MQTT_URL", raising=False)
    action = {"type": "mqtt", "url": broker.url}
    rule = Rule("r1", RuleSpec(name="r", query="a person", actions=[action]), None, None, 0.0, 0.0)

    def send(allowed: str, body: bytes) -> list[tuple[str, str, str]]:
        monkeypatch.setenv("RTVI_ALERT_ALLOWED_HOSTS", allowed)
        outcomes: list[tuple[str, str, str]] = []
        deliveries = Deliveries(Settings().alerts, Metrics(), lambda: None, lambda *o: outcomes.append(o))

        async def run() -> None:
            deliveries.deliver(rule, body, ext_pb2.Incident(), b"cam", time.time())
            for _ in range(60):
                if outcomes:
                    break
                await asyncio.sleep(0.05)
            assert deliveries._mqtt[broker.url].client.is_connected() == bool(outcomes)
            await deliveries.close()

        asyncio.run(run())
        return outcomes

    try:
        with caplog.at_level("WARNING", logger="rtvi.core.alerts.delivery"):
            assert send("", b'{"n": 1}') == []  # public addresses only: never connected, nothing sent
        assert any("refused" in r.getMessage() and "127.0.0.1" in r.getMessage() for r in caplog.records)
        assert send("127.0.0.1", b'{"n": 2}') == [("r1", "mqtt", "delivered")]
        time.sleep(0.3)
        assert [p for _, _, p in listener.messages] == [b'{"n": 2}']
    finally:
        listener.stop()
        broker.stop()


def _webhook_rule(rule_id: str, url: str) -> Rule:
    spec = RuleSpec(name=rule_id, query="a person", actions=[{"type": "webhook", "url": url}])
    return Rule(rule_id, spec, None, None, 0.0, 0.0)


def test_a_slow_receiver_holds_only_its_share_of_the_webhook_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that answers slowly (or never) fills its own share of the slots, not everyone's: another
    receiver's incident still goes out at once. The slow one's are dropped beyond its share (counted),
    and those in flight at shutdown are given time to finish."""
    monkeypatch.setattr(delivery, "MAX_WEBHOOKS_IN_FLIGHT", 6)
    monkeypatch.setattr(delivery, "MAX_WEBHOOKS_PER_HOST", 4)
    monkeypatch.setenv("RTVI_ALERT_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("RTVI_ALERT_WEBHOOK_RETRIES", "0")
    slow, fast = WebhookReceiver(delay_s=2.0), WebhookReceiver()
    outcomes: list[tuple[str, str, str]] = []
    deliveries = Deliveries(Settings().alerts, Metrics(), lambda: None, lambda *o: outcomes.append(o))

    async def run() -> None:
        slow_rule = _webhook_rule("slow", slow.url)
        for n in range(6):
            deliveries.deliver(slow_rule, b'{"n": %d}' % n, ext_pb2.Incident(), b"k", 0.0)
        assert outcomes == [("slow", "webhook", "dropped")] * 2  # beyond its 4
        started = time.monotonic()
        deliveries.deliver(_webhook_rule("fast", fast.url), b'{"fast": 1}', ext_pb2.Incident(), b"k", 0.0)
        while ("fast", "webhook", "delivered") not in outcomes and time.monotonic() - started < 1.5:
            await asyncio.sleep(0.02)
        assert ("fast", "webhook", "delivered") in outcomes  # not held behind the slow receiver
        await deliveries.close()  # the slow one's 4 finish within the drain

    try:
        asyncio.run(run())
        assert outcomes.count(("slow", "webhook", "delivered")) == 4 and len(slow.received) == 4
        assert [r.body for r in fast.received] == [b'{"fast": 1}']
    finally:
        slow.stop()
        fast.stop()


def test_webhooks_still_in_flight_after_the_drain_are_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RTVI_ALERT_ALLOWED_HOSTS", "127.0.0.1")
    hung = WebhookReceiver(delay_s=5.0)
    outcomes: list[tuple[str, str, str]] = []
    metrics = Metrics()
    deliveries = Deliveries(Settings().alerts, metrics, lambda: None, lambda *o: outcomes.append(o))

    async def run() -> None:
        for _ in range(3):
            deliveries.deliver(_webhook_rule("hung", hung.url), b"{}", ext_pb2.Incident(), b"k", 0.0)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await deliveries.close(drain_s=0.5)
        assert time.monotonic() - started < 2

    try:
        asyncio.run(run())
        assert outcomes == [("hung", "webhook", "dropped")] * 3
        assert metrics.alert_deliveries.labels("webhook", "dropped")._value.get() == 3
    finally:
        hung.stop()
