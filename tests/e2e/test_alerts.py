"""Text alert rules (issue 26) against a running service: rules CRUD and validation, persistence, a live
RTSP camera that shows a person only in the middle of its clip, the calibrated decision, cooldown,
min-consecutive and pause, the VLM check (the scripted VLM), and incidents delivered by webhook (real
socket, HMAC), MQTT (Debian's mosquitto) and Kafka (tansu, decoded with the schema)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.fernet import Fernet
from PIL import Image

from rtvi.core.bus.schema import ext_pb2
from rtvi.core.models.bundled import MATCH_FLOOR
from tests.alert_receivers import Mosquitto, MqttListener, WebhookReceiver
from tests.e2e.test_streams import cv_body
from tests.kafka_redis import TansuBroker, consume
from tests.media_factory import make_clip_from_images, make_image, scene_photos
from tests.metrics_scrape import Scrape
from tests.postgres_server import PostgresServer
from tests.rtsp_server import RtspServer, gst_available
from tests.scripted_vlm import ScriptedVlmServer
from tests.servers import RtviServer, free_port
from tests.sse_client import SseReader

CHUNK_S = 2
# The clip: coffee, then a person (the astronaut) for PERSON_S, then coffee again; the camera replays it.
BEFORE_S, PERSON_S, AFTER_S = 10, 8, 10
SECRET = "s3cr3t-for-the-hook-0123456789"


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.3)


def iso_ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def error_of(r: httpx.Response, status: int = 422) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"}, body
    return str(body["message"])


def nearest_scene(jpeg: bytes, scenes: dict[str, np.ndarray]) -> str:
    """Which scene a thumbnail shows, by pixels (not by the model under test)."""
    small = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((64, 48)), dtype=np.float32)
    return min(scenes, key=lambda n: float(np.abs(small - scenes[n]).mean()))


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    photos = scene_photos()
    return {
        name: np.asarray(Image.fromarray(photos[name]).resize((64, 48)), dtype=np.float32)
        for name in ("coffee", "astronaut")
    }


@pytest.fixture(scope="module")
def person_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    photos = scene_photos()
    # One still per second: the clip is coffee x BEFORE_S, astronaut x PERSON_S, coffee x AFTER_S.
    stills = [photos["coffee"]] * BEFORE_S + [photos["astronaut"]] * PERSON_S + [photos["coffee"]] * AFTER_S
    d = tmp_path_factory.mktemp("alert-media")
    return make_clip_from_images(
        d / "person.mp4", stills, seconds_each=1, fps=10, width=320, height=240, gop=10
    )


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


def alert_env(**extra: str) -> dict[str, str]:
    return {
        "RTVI_ALERT_ALLOWED_HOSTS": "127.0.0.1",
        "RTVI_ALERT_WARMUP_CHUNKS": "3",
        "RTVI_ALERT_RULES_REFRESH_SEC": "0.5",
        "RTVI_ALERT_WEBHOOK_RETRIES": "2",
        "RTVI_RTSP_RECONNECTION_INTERVAL": "1",
        **extra,
    }


def test_rules_crud_validation_secrets_and_restart(tmp_path: Path) -> None:
    storage = tmp_path / "assets"
    hook = WebhookReceiver()
    server = RtviServer(storage, env=alert_env()).start()
    try:
        with server.client() as c:
            assert "a query text" in error_of(c.post("/v1/alerts/rules", json={"name": "nothing"}))
            assert error_of(c.post("/v1/alerts/rules", json={"query": "a person"}))  # no name
            bad_action = {"name": "x", "query": "a cat", "actions": [{"type": "pager"}]}
            assert error_of(c.post("/v1/alerts/rules", json=bad_action))
            wildcard = {"name": "x", "query": "a cat", "actions": [{"type": "mqtt", "topic": "a/#"}]}
            assert "wildcards" in error_of(c.post("/v1/alerts/rules", json=wildcard))
            private = {
                "name": "x",
                "query": "a cat",
                "actions": [{"type": "webhook", "url": "http://10.9.8.7/h"}],
            }
            assert "RTVI_ALERT_ALLOWED_HOSTS" in error_of(c.post("/v1/alerts/rules", json=private), 400)
            verify = {"name": "x", "query": "a cat", "verify": "Is there a cat?"}
            assert "RTVI_ALERT_VLM_URL" in error_of(c.post("/v1/alerts/rules", json=verify), 400)
            assert c.get("/v1/alerts/rules").json() == {"data": []}  # nothing half-written

            rule = {
                "name": "cat at the door",
                "query": "a cat",
                "stream_ids": ["door"],
                "cooldown_s": 30,
                "min_consecutive": 2,
                "actions": [{"type": "webhook", "url": hook.url, "secret": SECRET}],
            }
            r = c.post("/v1/alerts/rules", json=rule)
            assert r.status_code == 200, r.text
            created = r.json()
            rule_id = created["id"]
            # Where it goes is shown as scheme, host and port: a webhook's path often holds its token.
            assert created["actions"] == [
                {"type": "webhook", "url": f"http://127.0.0.1:{hook.port}/…", "secret": True}
            ]
            assert SECRET not in r.text and hook.url not in r.text
            # A refused body is not echoed where it may hold a secret.
            leaky = {
                "name": "x",
                "actions": [{"type": "webhook", "url": hook.url + "/T0K3N", "secret": SECRET}],
            }
            refused = c.post("/v1/alerts/rules", json=leaky)
            assert refused.status_code == 422 and SECRET not in refused.text and "T0K3N" not in refused.text
            assert (created["sensitivity"], created["paused"], created["min_consecutive"]) == (0.5, False, 2)

            r = c.patch(f"/v1/alerts/rules/{rule_id}", json={"paused": True, "sensitivity": 0.8})
            assert r.status_code == 200 and r.json()["paused"] is True and r.json()["sensitivity"] == 0.8
            assert error_of(c.patch(f"/v1/alerts/rules/{rule_id}", json={"sensitivity": 2}))
            assert "Invalid rule" in error_of(
                c.patch(f"/v1/alerts/rules/{rule_id}", json={"query": None}), 400
            )
            assert error_of(c.get("/v1/alerts/rules/0123456789abcdef0123456789abcdef"), 404)
            assert error_of(c.get("/v1/alerts/rules/../../etc"), 404)
            # A reference picture (data: URI) instead of, or with, a text; not repeated in answers.
            cat_jpg = make_image(tmp_path / "cat.jpg", width=320, height=240, picture=scene_photos()["cat"])
            picture = "data:image/jpeg;base64," + base64.b64encode(cat_jpg.read_bytes()).decode()
            r = c.post("/v1/alerts/rules", json={"name": "looks like this cat", "image": picture})
            assert r.status_code == 200 and r.json()["image"] is True and picture[:40] not in r.text
            by_picture = r.json()["id"]
            assert "data: URI" in error_of(
                c.post("/v1/alerts/rules", json={"name": "x", "image": "http://a/b.jpg"})
            )
            assert c.delete(f"/v1/alerts/rules/{by_picture}").status_code == 200
            assert [x["id"] for x in c.get("/v1/alerts/rules").json()["data"]] == [rule_id]
    finally:
        server.stop()
    # The secret is sealed at rest, as camera passwords are.
    db = sqlite3.connect(storage / "registry.sqlite3")
    stored = db.execute("SELECT spec FROM alert_rules").fetchone()[0]
    db.close()
    assert SECRET not in stored and hook.url not in stored

    server = RtviServer(storage, env=alert_env()).start()
    try:
        with server.client() as c:
            kept = c.get(f"/v1/alerts/rules/{rule_id}").json()
            assert (kept["name"], kept["paused"], kept["sensitivity"]) == ("cat at the door", True, 0.8)
            assert kept["stream_ids"] == ["door"] and kept["actions"][0]["secret"] is True
            assert c.delete(f"/v1/alerts/rules/{rule_id}").json() == {"id": rule_id, "deleted": True}
            assert error_of(c.get(f"/v1/alerts/rules/{rule_id}"), 404)
            assert error_of(c.delete(f"/v1/alerts/rules/{rule_id}"), 404)
    finally:
        server.stop()
        hook.stop()


pytestmark_live = pytest.mark.skipif(
    not gst_available(), reason="gst-rtsp-server missing: run `make rtsp-deps`"
)


@pytestmark_live
def test_a_live_camera_fires_person_rules_only_on_the_person(
    tmp_path: Path,
    person_clip: Path,
    scenes: dict[str, np.ndarray],
    scripted: ScriptedVlmServer,
    broker: TansuBroker,
    mosquitto: Mosquitto,
) -> None:
    camera = RtspServer(free_port(), tmp_path, file=person_clip).start()
    hook = WebhookReceiver(fail_first=1)  # the first delivery is retried
    slow_hook = WebhookReceiver(delay_s=3)  # slow (within the 5 s timeout): it must hold up nothing else
    dead_hook = WebhookReceiver(status=500)  # always failing: retried, then given up and counted
    listener = MqttListener(mosquitto.port, "rtvi/#")
    env = alert_env(
        RTVI_ALERT_VLM_URL=scripted.url,
        RTVI_ALERT_MQTT_URL=mosquitto.url,
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
    )
    server = RtviServer(tmp_path / "assets", env=env).start()
    try:
        with server.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]

            def rule(name: str, query: str, **fields: Any) -> str:
                r = c.post("/v1/alerts/rules", json={"name": name, "query": query, **fields})
                assert r.status_code == 200, r.text
                return str(r.json()["id"])

            actions = [
                {"type": "webhook", "url": hook.url, "secret": SECRET},
                {"type": "mqtt", "topic": "rtvi/person"},
                {"type": "kafka"},
            ]
            person = rule("person", "a person", cooldown_s=3600, actions=actions)
            fast_and_slow = [{"type": "webhook", "url": u} for u in (slow_hook.url, hook.url + "/every")]
            every = rule(
                "person, every chunk", "a person", cooldown_s=0, min_consecutive=2, actions=fast_and_slow
            )
            dead = rule(
                "dead hook", "a person", cooldown_s=3600, actions=[{"type": "webhook", "url": dead_hook.url}]
            )
            cat = rule("cat", "a cat", cooldown_s=0)
            paused = rule("paused person", "a person", cooldown_s=0, paused=True)
            confirmed = rule("verified person", "a person", cooldown_s=3600, verify='SAY:{"decision": "yes"}')
            denied = rule("denied person", "a person", cooldown_s=0, verify='SAY:{"decision": "no"}')
            elsewhere = rule("other camera", "a person", cooldown_s=0, stream_ids=["not-this-one"])

            live_feed = SseReader(server.url, None, "/v1/alerts/incidents/stream")
            # The camera, embedded from registration on (CV metadata asks for the served model).
            body = cv_body("dock", camera.url, metadata={"model": model, "chunk_duration": CHUNK_S})
            assert c.post("/v1/stream/add", json=body).json()["inference"] is True

            def incidents(rule_id: str) -> list[dict[str, Any]]:
                return list(c.get("/v1/alerts/incidents", params={"rule_id": rule_id}).json()["data"])

            # Through the person interval and well into the coffee after it.
            wait_until(lambda: len(incidents(every)) >= 2, 90, "two person incidents")
            time.sleep(2 * CHUNK_S + 6)

            fired = {
                rid: incidents(rid) for rid in (person, every, cat, paused, confirmed, denied, elsewhere)
            }
            assert not fired[cat] and not fired[paused] and not fired[elsewhere] and not fired[denied]
            assert len(fired[person]) == 1, "the cooldown holds"
            assert len(fired[confirmed]) == 1 and fired[confirmed][0]["verification"]["decision"] == "yes"
            # min_consecutive=2: every incident of that rule follows a candidate chunk on the same stream.
            decided = c.get(f"/v1/alerts/rules/{every}/decisions", params={"limit": 500}).json()["data"][::-1]
            outcomes = [d["outcome"] for d in decided]
            assert outcomes[:3] == ["warming-up"] * 3
            assert {d["floor"] for d in decided} == {MATCH_FLOOR}  # the bundled model's, no min_score
            for i, outcome in enumerate(outcomes):
                if outcome == "fired":
                    assert outcomes[i - 1] in ("candidate", "fired"), outcomes
            assert "candidate" in outcomes and outcomes.count("below") >= 3
            # The chunks that stood out are one run, no longer than the person was on screen (plus the
            # two chunks that straddle the cuts); every rule fired inside it, on the same chunks.
            run = [d["chunk_idx"] for d in decided if d["outcome"] in ("candidate", "fired")]
            assert run == list(range(run[0], run[0] + len(run))) and len(run) <= PERSON_S // CHUNK_S + 2, run
            shown = []
            for incident in fired[person] + fired[every] + fired[confirmed]:
                assert incident["stream_id"] == "dock" and incident["score"] >= incident["threshold"]
                assert incident["chunk_idx"] in run, (incident["chunk_idx"], run)
                jpeg = c.get(incident["thumbnail_url"])
                assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
                shown.append(nearest_scene(jpeg.content, scenes))
            assert "astronaut" in shown  # the thumbnail is the chunk's own picture (by pixels, not the model)
            # The paused rule decided nothing; the rule for another camera saw no chunk.
            assert c.get(f"/v1/alerts/rules/{paused}/decisions").json()["data"] == []
            assert c.get(f"/v1/alerts/rules/{elsewhere}/decisions").json()["data"] == []

            # The VLM was asked only about candidates: never for the cat rule, once per candidate for "no".
            asked = scripted.requests()
            denied_asks = [q for q in asked if q["prompt"] == 'SAY:{"decision": "no"}']
            rejected = [
                d
                for d in c.get(f"/v1/alerts/rules/{denied}/decisions", params={"limit": 500}).json()["data"]
                if d["outcome"] == "rejected"
            ]
            assert denied_asks and len(denied_asks) == len(rejected)
            assert all(q["images"] >= 1 and q["response_format"]["type"] == "json_schema" for q in asked)
            denied_scored = c.get(f"/v1/alerts/rules/{denied}/decisions", params={"limit": 500}).json()[
                "data"
            ]
            assert len(denied_asks) < len(denied_scored) / 2, "the VLM is called on candidates only"

            # Webhook: retried after the 500, signed with the rule's secret, the chunk's times and score.
            first = fired[person][0]
            wait_until(
                lambda: any(r.headers.get("X-Rtvi-Rule-Id") == person for r in hook.received), 20, "hook"
            )
            got = next(r for r in hook.received if r.headers.get("X-Rtvi-Rule-Id") == person)
            assert hook.attempts >= 2
            expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
            assert got.headers["X-Rtvi-Signature"] == expected
            sent = got.json()
            for key in (
                "rule_id",
                "rule_name",
                "stream_id",
                "start_time",
                "end_time",
                "score",
                "thumbnail_url",
            ):
                assert sent[key] == first[key], key
            # MQTT: the same incident on the rule's topic.
            wait_until(lambda: listener.messages, 20, "the MQTT message")
            _, topic, payload = listener.messages[0]
            assert topic == "rtvi/person" and httpx.Response(200, content=payload).json()["id"] == first["id"]
            # Kafka: nv.Incident on KAFKA_INCIDENT_TOPIC, decoded with the schema.
            msgs = consume(broker.bootstrap, "mdx-vlm-incidents", 1, timeout=30, key_prefix=person.encode())
            assert len(msgs) == 1
            incident = ext_pb2.Incident.FromString(msgs[0].value())
            assert incident.sensorId == "dock" and incident.isAnomaly and incident.category == "person"
            assert incident.info["ruleId"] == person and incident.info["incidentId"] == first["id"]
            assert dict(msgs[0].headers() or [])["message_type"] == b"incident"

            # The live feed (SSE) delivered the incidents as they were raised.
            streamed = {e["id"] for _, e in live_feed.arrivals if isinstance(e, dict)}
            assert first["id"] in streamed and fired[every][0]["id"] in streamed
            live_feed.stop()
            # The slow receiver (3 s per request) held up nothing: each of that rule's incidents reached
            # the fast one within a second or two of its chunk's end, while slow deliveries were pending.
            fast = [r for r in hook.received if r.headers.get("X-Rtvi-Rule-Id") == every]
            assert len(fast) == len(fired[every]) >= 2
            assert max(r.at - iso_ts(r.json()["end_time"]) for r in fast) < 2.0
            wait_until(lambda: len(slow_hook.received) == len(fast), 15, "the slow deliveries, side by side")
            # A receiver that always fails: 1 + RTVI_ALERT_WEBHOOK_RETRIES attempts, then counted.
            wait_until(lambda: dead_hook.attempts >= 3, 20, "the retries")
            dead_stats = wait_until(
                lambda: c.get(f"/v1/alerts/rules/{dead}").json()["stats"]["deliveries"].get("webhook:failed"),
                20,
                "the failure counted",
            )
            assert dead_stats == 1 and dead_hook.attempts == 3
            scrape = Scrape(server.url)
            assert scrape.get("rtvi_alert_deliveries_total", type="webhook", outcome="failed") == 1

            stats = c.get(f"/v1/alerts/rules/{person}").json()["stats"]
            assert (
                stats["deliveries"].get("webhook:delivered") == 1
                and stats["deliveries"].get("mqtt:delivered") == 1
            )
    finally:
        server.stop()
        listener.stop()
        for receiver in (hook, slow_hook, dead_hook):
            receiver.stop()
        camera.kill()


@pytestmark_live
def test_a_restart_goes_on_from_the_saved_calibration(tmp_path: Path, person_clip: Path) -> None:
    """The calibration is saved to the registry (here every second, and at shutdown): after a restart,
    the camera's first chunk is decided against its recent scores, with no new warm-up. A replica taking
    over a camera reads it the same way (docs/alerts.md)."""
    camera = RtspServer(free_port(), tmp_path, file=person_clip).start()
    server = RtviServer(tmp_path / "assets", env=alert_env(RTVI_ALERT_CALIBRATION_SAVE_SEC="1")).start()

    def decisions(c: httpx.Client, rule_id: str) -> list[dict[str, Any]]:
        got = c.get(f"/v1/alerts/rules/{rule_id}/decisions", params={"limit": 500}).json()["data"]
        return list(got[::-1])  # oldest first

    try:
        with server.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            rule_id = c.post("/v1/alerts/rules", json={"name": "p", "query": "a person"}).json()["id"]
            body = cv_body("gate", camera.url, metadata={"model": model, "chunk_duration": CHUNK_S})
            assert c.post("/v1/stream/add", json=body).json()["inference"] is True
            before = wait_until(lambda: len(decisions(c, rule_id)) >= 6 and decisions(c, rule_id), 90, "6")
            assert [d["outcome"] for d in before[:3]] == ["warming-up"] * 3  # a fresh start warms up
        server.stop()
        server.start()
        with server.client() as c:
            after = wait_until(lambda: decisions(c, rule_id), 90, "decisions after the restart")
            first = after[0]
            assert first["outcome"] != "warming-up" and first["threshold"] is not None, after[:3]
            assert iso_ts(first["start_time"]) >= iso_ts(before[-1]["end_time"])  # a new chunk, not a re-run
    finally:
        server.stop()
        camera.kill()


@pytestmark_live
def test_the_incident_feed_of_any_replica_shows_every_replica_s_incidents(
    tmp_path: Path, person_clip: Path, postgres: PostgresServer
) -> None:
    """Two replicas sharing one registry (PostgreSQL), as behind a load balancer: the camera and its rule
    run on one; an SSE reader of the other gets each incident once, as a reader of the first does."""
    camera = RtspServer(free_port(), tmp_path, file=person_clip).start()
    env = alert_env(
        RTVI_DATABASE_URL=postgres.create_database("incident_feed"),
        RTVI_SECRET_KEY=Fernet.generate_key().decode(),
        RTVI_ALERT_WARMUP_CHUNKS="100000",  # the rule's own floor (min_score -1) decides: every chunk fires
    )
    a = RtviServer(tmp_path / "a-assets", env=env).start(wait_ready=False)
    b = RtviServer(tmp_path / "b-assets", env=env).start(wait_ready=False)
    feeds: list[SseReader] = []

    def fed(feed: SseReader) -> list[str]:
        return [e["id"] for _, e in feed.arrivals if isinstance(e, dict)]

    try:
        a.wait("/v1/ready", 180), b.wait("/v1/ready", 180)
        feeds = [SseReader(srv.url, None, "/v1/alerts/incidents/stream") for srv in (a, b)]
        with a.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            r = c.post(
                "/v1/alerts/rules",
                json={"name": "every chunk", "query": "a person", "min_score": -1, "cooldown_s": 0},
            )
            assert r.status_code == 200, r.text
            rule_id = r.json()["id"]
            body = cv_body("dock", camera.url, metadata={"model": model, "chunk_duration": CHUNK_S})
            assert c.post("/v1/stream/add", json=body).json()["inference"] is True
        wait_until(lambda: len(fed(feeds[1])) >= 3, 90, "incidents on the other replica's feed")
        on_b = fed(feeds[1])
        # The replica that raised them handed each on as it stored it (before b could read it, but for
        # a few milliseconds).
        wait_until(lambda: set(on_b) <= set(fed(feeds[0])), 5, "the same incidents on a's feed")
        on_a = fed(feeds[0])
        assert len(set(on_a)) == len(on_a) and len(set(on_b)) == len(on_b), "an incident came twice"
        with b.client() as c:
            # Raised on a: b scored no chunk of the camera.
            assert c.get(f"/v1/alerts/rules/{rule_id}/decisions").json()["data"] == []
            first = c.get(f"/v1/alerts/incidents/{on_b[0]}").json()
            assert first["stream_id"] == "dock" and first["rule_id"] == rule_id
            # `after` follows the list: only what was raised after the first one.
            later = c.get("/v1/alerts/incidents", params={"after": first["created_at_unix"]}).json()["data"]
            assert on_b[0] not in {i["id"] for i in later} and set(on_b[1:]) <= {i["id"] for i in later}
    finally:
        for feed in feeds:
            feed.stop()
        a.stop(), b.stop()
        camera.kill()
