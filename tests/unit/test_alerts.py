"""Alert rules' parts (core/alerts): the calibration, the VLM's structured answer, where incidents may go,
and the store (a real SQLite registry, its migrations applied)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from cryptography.fernet import Fernet

from rtvi.core.alerts.calibration import ABSOLUTE_FLOOR, MIN_MARGIN, ScoreHistory, threshold
from rtvi.core.alerts.rules import RuleFields, RuleSpec
from rtvi.core.alerts.store import CALIBRATION_KEPT_S, AlertStore, SavedCalibration
from rtvi.core.alerts.targets import refusal
from rtvi.core.alerts.verify import read_decision
from rtvi.core.assets.registry import AssetRegistry
from rtvi.core.assets.secrets import SecretBox
from rtvi.core.models.bundled import MATCH_FLOOR
from rtvi.settings import HostAllowlist


def history(scores: list[float], window: int = 100) -> ScoreHistory:
    h = ScoreHistory(window)
    for s in scores:
        h.add(s)
    return h


def test_warm_up_fires_only_on_an_explicit_floor() -> None:
    assert threshold(history([0.1, 0.2]), 0.5, None, warmup=3).value is None
    assert threshold(history([0.1, 0.2]), 0.5, 0.4, warmup=3).value == 0.4
    assert threshold(history([0.1, 0.2, 0.3]), 0.5, None, warmup=3).value is not None


def test_a_static_scene_needs_the_margin_and_the_floor() -> None:
    # MAD is 0 on a static scene: the margin keeps a flicker from standing out; the floor holds too.
    assert threshold(history([0.3] * 20), 0.5, None, 3).value == pytest.approx(0.3 + MIN_MARGIN)
    assert threshold(history([-0.2] * 20), 0.5, None, 3).value == ABSOLUTE_FLOOR
    assert threshold(history([-0.2] * 20), 0.5, 0.5, 3).value == 0.5


def test_events_do_not_raise_their_own_bar() -> None:
    rng = np.random.default_rng(0)
    background = list(rng.normal(0.05, 0.02, 200))
    quiet = threshold(history(background, 300), 0.5, None, 3).value
    # A third of the window is the event itself (a person stays a while): the bar barely moves, where a
    # mean + k * standard deviation would have risen above the event's own scores.
    busy_scores = background + [0.6] * 100
    busy = threshold(history(busy_scores, 300), 0.5, None, 3).value
    assert quiet is not None and busy is not None and busy < 0.3
    naive = float(np.mean(busy_scores) + 5 * np.std(busy_scores))
    assert naive > 0.6 > busy


def test_a_camera_that_alternates_between_two_scenes_can_still_fire() -> None:
    # Half the window at 0.12 (one scene), half at -0.05 (another): MAD is half the gap, so median +
    # k * sigma lies above 1; the 90th percentile + margin keeps the bar just above the upper scene.
    bar = threshold(history([0.12, -0.05] * 50), 0.5, None, 3).value
    assert bar is not None and 0.12 < bar < 0.3


def test_what_stands_out_stays_out_of_the_history_until_it_is_the_new_normal() -> None:
    h = history([0.05] * 40, window=40)
    for _ in range(10):  # window // 4 chunks of an event: the bar does not move
        h.add(0.6, stood_out=True)
    assert threshold(h, 0.5, None, 3).value == pytest.approx(0.1)
    for _ in range(30):  # it lasts: from the 11th on, its scores join, and the bar rises above them
        h.add(0.6, stood_out=True)
    bar = threshold(h, 0.5, None, 3).value
    assert bar is not None and bar > 0.6


def test_the_models_match_floor_keeps_a_change_of_background_from_firing() -> None:
    # A static camera scores 0.07 for "a person"; a cut to another ordinary scene (0.20: what the bundled
    # model gives the empty scene for "a spaceship", bench/match_floor.py) stands out from that history,
    # but it does not show the query: the model's floor keeps it from firing, ABSOLUTE_FLOOR did not.
    h = history([0.07] * 40)
    assert threshold(h, 0.5, None, 3).value == pytest.approx(0.12)  # median + 0.05, above ABSOLUTE_FLOOR
    assert threshold(h, 0.5, None, 3).passed(0.20)
    bar = threshold(h, 0.5, None, 3, match_floor=MATCH_FLOOR)
    assert bar.value == MATCH_FLOOR and not bar.passed(0.10) and bar.passed(0.55)
    assert not bar.passed(0.20)
    assert threshold(h, 0.5, 0.05, 3, match_floor=MATCH_FLOOR).value == pytest.approx(0.12)  # min_score wins


def test_a_target_in_view_during_the_warm_up_does_not_become_normal() -> None:
    # The person is there when the rule starts (6 chunks at 0.6): those scores pass the model's floor and
    # stay out of the history, so the warm-up is made of the ordinary scene and the person, coming back,
    # stands out. Without the hold the median would be the person's and the bar above him.
    def run(hold: bool) -> float | None:
        h = ScoreHistory(100)
        for score in [0.6] * 6 + [0.05] * 6:
            bar = threshold(h, 0.5, None, 8, match_floor=MATCH_FLOOR)
            h.add(score, stood_out=hold and bar.holds_out(score))
        assert h.count == (6 if hold else 12)
        return threshold(h, 0.5, None, 6 if hold else 12, match_floor=MATCH_FLOOR).value

    held, naive = run(True), run(False)
    assert held is not None and held < 0.6
    assert naive is not None and naive > 0.6


def test_sensitivity_lowers_the_bar() -> None:
    h = history(list(np.random.default_rng(1).normal(0.1, 0.05, 100)))
    bars = [threshold(h, s, None, 3).value for s in (0.0, 0.5, 1.0)]
    assert bars[0] is not None and bars[1] is not None and bars[2] is not None
    assert bars[0] > bars[1] > bars[2]


def test_the_history_is_a_bounded_ring() -> None:
    h = history([float(i) for i in range(1000)], window=50)
    assert h.recent().shape == (50,) and h.count == 1000
    assert set(h.recent().tolist()) == {float(i) for i in range(950, 1000)}


def test_a_saved_history_comes_back_in_order_and_goes_on_as_the_ring_did() -> None:
    live = history([float(i) for i in range(130)], window=50)  # wrapped: 80..129 kept
    saved = live.in_order()
    assert saved.tolist() == [float(i) for i in range(80, 130)]
    back = ScoreHistory.restored(50, saved, run=3)
    assert back.run == 3 and sorted(back.recent().tolist()) == sorted(live.recent().tolist())
    for s in (130.0, 131.0):  # the oldest go first, as in the live ring
        live.add(s)
        back.add(s)
    assert back.in_order().tolist() == live.in_order().tolist() == [float(i) for i in range(82, 132)]
    assert ScoreHistory.restored(20, saved, run=0).in_order().tolist() == [float(i) for i in range(110, 130)]
    assert ScoreHistory.restored(50, saved[:5], run=0).in_order().tolist() == [80.0, 81.0, 82.0, 83.0, 84.0]


@pytest.mark.parametrize(
    ("answer", "decision"),
    [
        ('{"decision": "yes", "reason": "a person at the door"}', "yes"),
        ('{"decision": "No"}', "no"),
        ('```json\n{"decision": "yes"}\n```', "yes"),
        ("Yes, there is a person.", "error"),  # free text is not a decision, even when it says yes
        ('{"decision": "maybe"}', "error"),
        ('["yes"]', "error"),
        ("", "error"),
    ],
)
def test_only_a_structured_answer_decides(answer: str, decision: str) -> None:
    assert read_decision(answer) == decision


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://127.0.0.1:9/h", "", False),
        ("http://127.0.0.1:9/h", "127.0.0.1", True),
        ("http://10.1.2.3/h", "10.0.0.0/8", True),
        ("http://10.1.2.3/h", "192.168.0.0/16", False),
        ("http://169.254.169.254/latest", "", False),
        ("http://8.8.8.8/h", "", True),
        ("http://localhost:8080/h", "", False),
        ("http://localhost:8080/h", "localhost", True),
        ("mqtt://192.168.1.5:1883", "", False),
        ("http:///nohost", "", False),
    ],
)
def test_where_incidents_may_go(url: str, allowed: str, ok: bool) -> None:
    why = asyncio.run(refusal(url, HostAllowlist.parse(allowed)))
    assert (why is None) == ok, why
    if not ok and "nohost" not in url:
        assert "RTVI_ALERT_ALLOWED_HOSTS" in str(why)


def test_a_patch_is_validated_as_a_whole_rule() -> None:
    spec = RuleSpec(name="r", query="a cat")
    assert spec.patched(RuleFields(paused=True)).paused is True
    with pytest.raises(ValueError, match="query text"):
        spec.patched(RuleFields.model_validate({"query": None}))
    with pytest.raises(ValueError):
        RuleSpec.model_validate({"name": "r", "query": "x", "image": "http://example.com/a.jpg"})


def test_store_seals_secrets_and_keeps_at_most_max_incidents(tmp_path: Path) -> None:
    registry = AssetRegistry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    box = SecretBox(Fernet.generate_key())
    store = AlertStore(registry.engine, box, max_incidents=5)
    spec = RuleSpec.model_validate(
        {
            "name": "door",
            "query": "a person",
            "actions": [
                {"type": "webhook", "url": "https://hooks.example/T0K3N", "secret": "hush"},
                {"type": "mqtt", "url": "mqtt://user:pw@broker.example", "topic": "a/b"},
            ],
        }
    )
    rule = store.add_rule(spec, np.ones(4, dtype=np.float32), "model-a")
    with registry.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT spec FROM alert_rules").scalar_one()
    assert "hush" not in raw and "T0K3N" not in raw and "pw@" not in raw
    loaded = store.rule(rule.id)
    assert loaded is not None and loaded.spec == spec and loaded.vector_model == "model-a"
    assert loaded.vector is not None and loaded.vector.tolist() == [1.0] * 4

    removed_all: list[str] = []
    for i in range(8):
        incident = {
            "id": f"{i:032x}",
            "rule_id": rule.id,
            "stream_id": f"cam-{i % 2}",
            "created_at_unix": 100.0 + i,
        }
        removed_all += store.add_incident(incident)
    assert removed_all == [f"{i:032x}" for i in range(3)]  # the oldest go first
    newest = store.incidents()
    assert [x["id"] for x in newest] == [f"{i:032x}" for i in range(7, 2, -1)]
    assert [x["id"] for x in store.incidents(stream_id="cam-1")] == [f"{i:032x}" for i in (7, 5, 3)]
    assert [x["id"] for x in store.incidents(limit=2, before=106.0)] == [f"{i:032x}" for i in (5, 4)]
    assert store.incidents(rule_id="other") == []
    assert store.delete_rule(rule.id) and store.rule(rule.id) is None and not store.delete_rule(rule.id)
    registry.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_calibration_is_saved_per_rule_and_stream_replaced_and_removed_with_its_rule(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Both registries: the upsert is each dialect's own (replicas share PostgreSQL)."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres").create_database(f"t{uuid.uuid4().hex[:12]}")
    registry = AssetRegistry(url)
    store = AlertStore(registry.engine, None, max_incidents=5)
    spec = RuleSpec.model_validate({"name": "door", "query": "a person"})
    rule, other = (store.add_rule(spec, np.ones(4, dtype=np.float32), "m") for _ in range(2))

    def state(rule_id: str, stream_id: str, scores: list[float], at: float) -> SavedCalibration:
        return SavedCalibration(
            rule_id, stream_id, "digest", np.asarray(scores, np.float32), 1, float("-inf"), at
        )

    now = time.time()
    store.save_calibration([state(rule.id, "cam-1", [0.1, 0.2], now), state(other.id, "cam-1", [0.3], now)])
    store.save_calibration([state(rule.id, "cam-1", [0.2, 0.4, 0.5], now + 1)])  # replaced, not added
    got = {c.rule_id: c for c in store.calibration("cam-1")}
    assert set(got) == {rule.id, other.id} and store.calibration("cam-2") == []
    assert got[rule.id].scores.tolist() == pytest.approx([0.2, 0.4, 0.5])
    assert got[rule.id].updated_at == now + 1
    assert got[rule.id].quiet_until == 0.0  # no cooldown (-inf is stored as the epoch)
    # A row nobody updated for a week goes at the next save; a rule's rows go with the rule.
    store.save_calibration([state(other.id, "cam-9", [0.1], now - CALIBRATION_KEPT_S - 1)])
    assert store.calibration("cam-9") == []
    assert store.delete_rule(rule.id)
    assert [c.rule_id for c in store.calibration("cam-1")] == [other.id]
