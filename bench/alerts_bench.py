"""Alert rules (issue 26, docs/alerts.md): do they fire on the right chunks, how many VLM calls does the
gate save, and how fast do incidents arrive.

Everything is real and on 127.0.0.1: `rtvi serve embed` with the bundled model, Debian's gst-rtsp-server
playing generated clips as live cameras, a webhook receiver (a real socket), Debian's mosquitto, and an
oracle VLM (bench/oracle_vlm.py: OpenAI-compatible, answers truthfully by matching the frames it is sent
to the labelled photos).

Part "accuracy" (CAMERAS cameras, MINUTES of 2 s chunks; a time-compressed camera-hour is 1,800 chunks):
  Each camera plays its own clip: scenes of 10-40 s (seeded) drawn from real photos (scikit-image): people
  (the astronaut, the cameraman, two and four people made from them), a cat, a rocket, coffee, an empty
  grey scene. Rules "a person" and "a cat" on every camera (cooldown 0, min_consecutive 1, so each chunk's
  decision shows), and "a person" with `verify` (the oracle VLM).
  With --rare, events as cameras see them: backgrounds (rocket, coffee, empty) of 20-60 s, after each,
  one time in four, a person or the cat for 6-16 s; and each camera its own look (plain, dim, hazy,
  warm), so that raw scores differ from camera to camera.
  Ground truth per chunk, from the clip's plan (scene changes at any tenth of a second): each camera's
  start of the clip is fitted to the chunks' thumbnails (their scene matched by pixels to the photos;
  the model under test is not asked), which places every chunk on the clip. A chunk shows a target when
  it is on screen for at least a quarter of the chunk, not when it is nowhere within 0.15 s of it
  (the fit's tolerance); glimpses between count for no method (the bundled model may see a target in
  one sampled frame). Warm-up chunks are left out of every method (the calibration has no
  distribution yet).
  Printed per rule for three readings of the truth: "interval" (the above), "middle_frame" (the
  thumbnail's scene alone: a chunk that spans a cut counts as whichever scene its middle shows) and
  "away_from_cuts" (only chunks that show one scene):
  precision, recall, F1 and false alerts per camera-hour of
  (a) the calibrated decision (the service's own: score >= its threshold),
  (b) one raw-cosine threshold chosen in hindsight, leave one camera out: for each camera the threshold
      with the best F1 on the other cameras, applied to it (what a user tuning on some cameras gets),
  (c) the best raw threshold in hindsight on all cameras together (an upper bound no user has).
  And the VLM gate: calls per camera-hour with `verify` (only candidates) vs one call per chunk (the
  reference's way), and the recall after verification.
Part "latency" (LATENCY_CAMERAS cameras x 10 rules each, 10 s chunks, LATENCY_MINUTES): one rule per
  camera fires on every chunk (an explicit floor during an endless warm-up) with a webhook and an MQTT
  action; nine others are scored and stay quiet. Chunk end -> webhook received and -> MQTT received,
  p50 / p95 / max, and the service's CPU.

Run: .venv/bin/python bench/alerts_bench.py [--cameras 4] [--minutes 6] [--latency-cameras 16]
     [--latency-minutes 3] [--parts accuracy,latency] [--seed 1] [--rare]
     [--dump decisions.json]   (defaults: ~15 min on 2 cores)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.alert_receivers import Mosquitto, MqttListener, WebhookReceiver  # noqa: E402
from tests.e2e.test_streams import cv_body  # noqa: E402
from tests.media_factory import make_clip, scene_photos  # noqa: E402
from tests.rtsp_server import RtspServer, gst_available  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402

from bench.clips import cpu_seconds  # noqa: E402
from bench.oracle_vlm import LOOKS, PEOPLE, SEEN_SHARE, OracleVlm, look, nearest, scene_stills  # noqa: E402

SCENES = [*PEOPLE, "cat", "rocket", "coffee", "empty"]
FLAGGED = {"candidate", "fired", "cooldown", "verifying", "rejected", "verify-failed"}
VERIFY_PROMPT = "Is there a person in these frames?"


def photos() -> dict[str, np.ndarray]:
    return {**scene_photos(), "empty": np.full((240, 320, 3), 128, dtype=np.uint8)}


TARGETS = (*PEOPLE, "cat")
BACKGROUNDS = ("rocket", "coffee", "empty")


FPS = 10  # the clips' frame rate: scene changes fall on any tenth of a second


def make_scene_clip(
    path: Path, seconds: int, rng: random.Random, rare: bool = False, camera_look: str = "plain"
) -> list[tuple[str, float]]:
    """A clip of scenes, the first one without a target (the warm-up sees an ordinary scene) -> its plan,
    (scene, seconds) in order. Default: any scene, 10-40 s each. `rare`: backgrounds of 20-60 s, and
    after each, one time in four, a target scene (a person or the cat) of 6-16 s: events, as a camera
    sees them. Durations are in tenths of a second, so that scene changes fall anywhere in a chunk
    (fit_clip_start needs that to place the chunks on the clip)."""
    pics = photos()
    plan: list[tuple[str, float]] = [(rng.choice(BACKGROUNDS), 30.0)]

    def tenths(lo: int, hi: int) -> float:
        return rng.randint(lo * 10, hi * 10) / 10

    while sum(d for _, d in plan) < seconds:
        if not rare:
            plan.append((rng.choice([s for s in SCENES if s != plan[-1][0]]), tenths(10, 40)))
        elif plan[-1][0] in BACKGROUNDS and rng.random() < 0.25:
            plan.append((rng.choice(TARGETS), tenths(6, 16)))
        else:
            plan.append((rng.choice([s for s in BACKGROUNDS if s != plan[-1][0]]), tenths(20, 60)))
    width, height = 320, 240
    shown = [
        np.asarray(Image.fromarray(look(pics[name], camera_look)).resize((width, height)), dtype=np.uint8)
        for name, _ in plan
    ]
    ends = np.cumsum([round(d * FPS) for _, d in plan])
    make_clip(
        path,
        seconds=int(ends[-1]) / FPS,
        fps=FPS,
        width=width,
        height=height,
        gop=FPS,
        frames=lambda i: shown[min(int(np.searchsorted(ends, i, side="right")), len(shown) - 1)],
    )
    return plan


def register(c: httpx.Client, cam: str, url: str, model: str, chunk_s: int) -> None:
    r = c.post("/v1/stream/add", json=cv_body(cam, url, metadata={"model": model, "chunk_duration": chunk_s}))
    assert r.status_code == 200 and r.json()["inference"], r.text


def add_rule(c: httpx.Client, **rule: Any) -> str:
    r = c.post("/v1/alerts/rules", json=rule)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# --- accuracy ---------------------------------------------------------------------------------------
def collect_decisions(
    c: httpx.Client, rules: dict[str, str], into: dict[tuple[str, str, int], dict[str, Any]]
) -> None:
    for name, rule_id in rules.items():
        for d in c.get(f"/v1/alerts/rules/{rule_id}/decisions", params={"limit": 500}).json()["data"]:
            key = (name, d["stream_id"], d["chunk_idx"])
            # A verified rule records a chunk twice (verifying, then its verdict): the verdict wins.
            if key not in into or into[key]["outcome"] == "verifying":
                into[key] = d


def thumbnail_scenes(c: httpx.Client, cam: str, start: float, end: float) -> dict[int, str]:
    """chunk index -> the scene its thumbnail shows, from the search index, 100 s windows at a time."""
    stills = scene_stills()
    seen: dict[int, str] = {}
    t = start
    while t < end:
        body = {
            "query": "a scene",
            "stream_ids": [cam],
            "top_k": 100,
            "start_time": iso(t),
            "end_time": iso(t + 100),
        }
        for hit in c.post("/v1/search", json=body).json()["data"]:
            if hit["chunk_idx"] not in seen and hit.get("thumbnail_url"):
                jpeg = c.get(hit["thumbnail_url"]).content
                seen[hit["chunk_idx"]] = nearest(Image.open(io.BytesIO(jpeg)), stills)
        t += 100
    return seen


# Where a chunk's thumbnail lies in it: the middle one (index 4) of the bundled model's 8 sampled frames,
# each the frame in the centre of one eighth of the chunk (core/media/sampler.py), so 4.5 / 8 of the way.
THUMBNAIL_AT = 4.5 / 8


@dataclass(frozen=True)
class ChunkTruth:
    """What a chunk showed. `middle`: its thumbnail's scene, by pixels. `shown`: seconds of the chunk
    each scene was on screen, from the clip's plan placed by fit_clip_start; `near`: the same over the
    chunk widened by FIT_TOLERANCE_S at both ends (what it may have shown, given the fit)."""

    middle: str
    shown: dict[str, float]
    near: dict[str, float]
    span: float


def fit_clip_start(
    plan: list[tuple[str, float]], chunks: list[tuple[float, float, str]]
) -> tuple[float, float]:
    """When the camera played the clip's first frame (Unix seconds), from the chunks (start, end,
    thumbnail scene): the moment at which the most thumbnails show the scene the plan has at their own
    time, the middle of the longest such run of 10 ms steps. -> (that moment, the share of chunks
    that agree). Scene changes fall on any tenth of a second, so the fit is within a frame or two."""
    names = sorted({n for n, _ in plan})
    ends = np.cumsum([d for _, d in plan])
    scene = np.array([names.index(n) for n, _ in plan])
    at = np.array([s + THUMBNAIL_AT * (e - s) for s, e, _ in chunks])
    seen = np.array([names.index(m) if m in names else -1 for *_, m in chunks])
    grid = np.arange(at.min() - ends[-1], at.min(), 0.01)
    agree = np.empty(len(grid), dtype=np.int64)
    for lo in range(0, len(grid), 2000):
        clip_t = at[None, :] - grid[lo : lo + 2000, None]
        k = np.searchsorted(ends, clip_t, side="right")
        inside = (clip_t >= 0) & (k < len(ends))
        agree[lo : lo + 2000] = (inside & (scene[np.minimum(k, len(ends) - 1)] == seen[None, :])).sum(1)
    best = agree == agree.max()
    runs, start = [], None  # [first, last] index of each run of best steps
    for i, b in enumerate([*best, False]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            runs.append((start, i - 1))
            start = None
    first, last = max(runs, key=lambda r: r[1] - r[0])
    return float(grid[(first + last) // 2]), int(agree.max()) / len(chunks)


def shown_during(plan: list[tuple[str, float]], t0: float, start: float, end: float) -> dict[str, float]:
    """Seconds each scene is on screen between `start` and `end` (Unix), the clip having begun at t0."""
    shown: dict[str, float] = {}
    at = t0
    for name, d in plan:
        overlap = min(end, at + d) - max(start, at)
        if overlap > 0:
            shown[name] = shown.get(name, 0.0) + overlap
        at += d
    return shown


# The per-chunk truth a rule is scored on: a chunk shows a target when it is on screen for at least
# SEEN_SHARE of the chunk (2 of the 8 frames the model sees); it does not when the target is nowhere
# near it (not within FIT_TOLERANCE_S of its ends: the thumbnail the fit rests on is a frame within an
# eighth of the chunk); between the two, a glimpse that one sampled frame may or may not have caught,
# counted for no method.
FIT_TOLERANCE_S = 0.15


def interval_label(t: ChunkTruth, wanted: set[str]) -> bool | None:
    if sum(sec for name, sec in t.shown.items() if name in wanted) >= SEEN_SHARE * t.span:
        return True
    return None if any(name in wanted for name in t.near) else False


def one_scene(t: ChunkTruth) -> bool:
    """Whether the chunk is away from cuts: one scene for all of it, within the fit."""
    return len(t.near) == 1


RULES = (("a person", set(PEOPLE)), ("a cat", {"cat"}))  # rule -> the scenes it should fire on
Row = tuple[float, bool, bool]  # score, flagged, truly shows the target
# How a chunk's truth is read: the interval the target is on screen (the measure), the thumbnail alone
# (the middle frame: a chunk that spans a cut counts as whichever scene is there), and only the chunks
# that show one scene.
VIEWS: dict[str, Callable[[ChunkTruth, set[str]], bool | None]] = {
    "interval": interval_label,
    "middle_frame": lambda t, wanted: t.middle in wanted,
    "away_from_cuts": lambda t, wanted: interval_label(t, wanted) if one_scene(t) else None,
}


def by_camera(
    decisions: list[dict[str, Any]],
    flagged: dict[tuple[str, int], bool],
    truth: dict[str, dict[int, ChunkTruth]],
    wanted: set[str],
) -> dict[str, dict[str, list[Row]]]:
    """One rule's decisions after the warm-up whose truth is known -> view -> camera -> rows.
    `flagged`: (camera, chunk) -> whether the method under test flagged it."""
    views: dict[str, dict[str, list[Row]]] = {view: {} for view in VIEWS}
    for d in decisions:
        cam, idx = d["stream_id"], d["chunk_idx"]
        t = truth.get(cam, {}).get(idx)
        if d["outcome"] == "warming-up" or t is None:
            continue
        for view, label in VIEWS.items():
            y = label(t, wanted)
            if y is not None:
                views[view].setdefault(cam, []).append((d["score"], flagged[(cam, idx)], y))
    return views


def prf(flags: list[bool], truth: list[bool]) -> tuple[float, float, float, int]:
    tp = sum(f and t for f, t in zip(flags, truth, strict=True))
    fp = sum(f and not t for f, t in zip(flags, truth, strict=True))
    fn = sum(t and not f for f, t in zip(flags, truth, strict=True))
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1, fp


GRID = [round(x, 3) for x in np.linspace(-0.2, 0.9, 221)]


def best_threshold(rows: list[tuple[float, bool]]) -> float:
    return max(GRID, key=lambda t: prf([s >= t for s, _ in rows], [y for _, y in rows])[2])


def evaluate(rows: dict[str, list[Row]], chunk_s: int) -> dict[str, Any]:
    """rows: camera -> [(score, calibrated flag, truth)] -> the three methods' figures."""
    cams = sorted(rows)
    everything = [r for cam in cams for r in rows[cam]]
    hours = len(everything) * chunk_s / 3600
    truth = [t for _, _, t in everything]

    def figures(flags: list[bool]) -> dict[str, float]:
        p, r, f1, fp = prf(flags, truth)
        return {"precision": p, "recall": r, "f1": f1, "false_per_camera_hour": fp / hours if hours else 0.0}

    loo_flags: list[bool] = []
    loo_thresholds = {}
    for cam in cams:
        others = [(s, t) for other in cams if other != cam for s, _, t in rows[other]]
        t = best_threshold(others)
        loo_thresholds[cam] = t
        loo_flags += [s >= t for s, _, _ in rows[cam]]
    hindsight = best_threshold([(s, t) for s, _, t in everything])
    return {
        "chunks": len(everything),
        "positives": sum(truth),
        "calibrated": figures([f for _, f, _ in everything]),
        "raw_leave_one_camera_out": {**figures(loo_flags), "thresholds": loo_thresholds},
        "raw_best_in_hindsight": {
            **figures([s >= hindsight for s, _, _ in everything]),
            "threshold": hindsight,
        },
    }


def run_accuracy(
    work: Path, cameras: int, minutes: float, seed: int, rare: bool = False, dump: Path | None = None
) -> dict[str, Any]:
    chunk_s = 2
    rng = random.Random(seed)
    oracle = OracleVlm(work)
    oracle.start()
    env = {"RTVI_ALERT_VLM_URL": oracle.url, "RTVI_ALERT_RULES_REFRESH_SEC": "1"}
    server = RtviServer(work / "acc-assets", env=env).start()
    cams: list[RtspServer] = []
    decisions: dict[tuple[str, str, int], dict[str, Any]] = {}
    try:
        with server.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            rules = {
                "a person": add_rule(c, name="person", query="a person", cooldown_s=0),
                "a cat": add_rule(c, name="cat", query="a cat", cooldown_s=0),
                "verified": add_rule(
                    c, name="person, verified", query="a person", cooldown_s=0, verify=VERIFY_PROMPT
                ),
            }
            plans: dict[str, list[tuple[str, float]]] = {}
            for i in range(cameras):
                clip = work / f"cam{i}.mp4"
                camera_look = LOOKS[i % len(LOOKS)] if rare else "plain"
                plans[f"cam{i}"] = make_scene_clip(clip, int(minutes * 60) + 60, rng, rare, camera_look)
                cams.append(RtspServer(free_port(), work, file=clip).start())
                register(c, f"cam{i}", cams[-1].url, model, chunk_s)
            started = time.time()
            while time.time() - started < minutes * 60:
                time.sleep(30)
                collect_decisions(c, rules, decisions)
            collect_decisions(c, rules, decisions)
            truth: dict[str, dict[int, ChunkTruth]] = {}
            fits: dict[str, float] = {}
            for cam, plan in plans.items():
                spans = {
                    idx: (ts(d["start_time"]), ts(d["end_time"]))
                    for (_, s, idx), d in decisions.items()
                    if s == cam
                }
                middles = thumbnail_scenes(
                    c, cam, min(a for a, _ in spans.values()) - 5, max(b for _, b in spans.values()) + 5
                )
                chunks = {idx: (*spans[idx], m) for idx, m in middles.items() if idx in spans}
                t0, fits[cam] = fit_clip_start(plan, list(chunks.values()))
                tol = FIT_TOLERANCE_S
                truth[cam] = {
                    idx: ChunkTruth(
                        m, shown_during(plan, t0, a, b), shown_during(plan, t0, a - tol, b + tol), b - a
                    )
                    for idx, (a, b, m) in chunks.items()
                }
    finally:
        server.stop()
        for cam in cams:
            cam.kill()
        oracle.stop()

    if dump:  # every decision with what its chunk showed: for replaying other calibrations offline
        dumped = [
            {**d, "rule": rule, **(asdict(truth[cam][idx]) if idx in truth[cam] else {})}
            for (rule, cam, idx), d in decisions.items()
        ]
        dump.write_text(json.dumps(sorted(dumped, key=lambda r: (r["rule"], r["stream_id"], r["chunk_idx"]))))
    out: dict[str, Any] = {"thumbnails_agreeing_with_the_fitted_clip": fits}
    for name, wanted in RULES:
        flagged = {
            (cam, idx): d["outcome"] in FLAGGED for (rule, cam, idx), d in decisions.items() if rule == name
        }
        scored = [d for (rule, _, _), d in decisions.items() if rule == name]
        out[name] = {
            view: evaluate(rows, chunk_s) for view, rows in by_camera(scored, flagged, truth, wanted).items()
        }
    verified = [
        (d, interval_label(truth[cam][idx], set(PEOPLE)) if idx in truth[cam] else None)
        for (rule, cam, idx), d in decisions.items()
        if rule == "verified"
    ]
    scored = [(d, t) for d, t in verified if d["outcome"] != "warming-up" and t is not None]
    calls = sum(1 for call in oracle.calls() if "person" in call["prompt"])
    hours = len(verified) * chunk_s / 3600
    positives = [d for d, t in scored if t]
    out["gate"] = {
        "chunks": len(verified),
        "vlm_calls_with_gate": calls,
        "vlm_calls_per_camera_hour_with_gate": calls / hours,
        "vlm_calls_per_camera_hour_every_chunk": len(verified) / hours,
        "calls_saved_factor": len(verified) / calls if calls else float("inf"),
        "recall_after_verification": sum(d["outcome"] == "fired" for d in positives) / max(1, len(positives)),
        "false_incidents": sum(d["outcome"] == "fired" for d, t in scored if not t),
    }
    return out


# --- latency ------------------------------------------------------------------------------------------
OTHER_QUERIES = ["a forklift", "a truck", "smoke", "a fire", "a dog", "a bicycle", "a car", "rain", "a box"]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=20) if len(values) > 1 else [values[0]] * 19
    return {"n": len(values), "p50": statistics.median(values), "p95": q[18], "max": max(values)}


def run_latency(work: Path, cameras: int, minutes: float, seed: int) -> dict[str, Any]:
    chunk_s = 10
    clip = work / "latency.mp4"
    make_scene_clip(clip, int(minutes * 60) + 60, random.Random(seed))
    broker = Mosquitto(work)
    broker.start()
    hook = WebhookReceiver()
    listener = MqttListener(broker.port, "rtvi/#")
    env = {
        "RTVI_ALERT_ALLOWED_HOSTS": "127.0.0.1",
        "RTVI_ALERT_MQTT_URL": broker.url,
        "RTVI_ALERT_WARMUP_CHUNKS": "100000",  # the firing rule's floor decides, every chunk
        "RTVI_ALERT_RULES_REFRESH_SEC": "1",
    }
    server = RtviServer(work / "lat-assets", env=env).start()
    cams: list[RtspServer] = []
    try:
        with server.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            for i in range(cameras):
                cam = f"lat{i}"
                actions = [{"type": "webhook", "url": hook.url}, {"type": "mqtt", "topic": f"rtvi/{cam}"}]
                add_rule(
                    c,
                    name=f"{cam} any",
                    query="a person",
                    stream_ids=[cam],
                    min_score=-1,
                    cooldown_s=0,
                    actions=actions,
                )
                for q in OTHER_QUERIES:
                    add_rule(c, name=f"{cam} {q}", query=q, stream_ids=[cam], cooldown_s=0)
            for i in range(cameras):
                cams.append(RtspServer(free_port(), work, file=clip).start())
                register(c, f"lat{i}", cams[-1].url, model, chunk_s)
            time.sleep(chunk_s * 2)  # every camera connected and its first (partial) chunk done
            assert server.proc is not None
            cpu0, t0 = cpu_seconds(server.proc.pid), time.time()
            time.sleep(minutes * 60)
            cpu = (cpu_seconds(server.proc.pid) - cpu0) / (time.time() - t0)
            webhook = [
                r.at - ts(r.json()["end_time"]) for r in hook.received if ts(r.json()["end_time"]) > t0
            ]
            mqtt = [
                at - ts(json.loads(p)["end_time"])
                for at, _, p in listener.messages
                if ts(json.loads(p)["end_time"]) > t0
            ]
            expected = cameras * int(minutes * 60 / chunk_s)
    finally:
        server.stop()
        for cam in cams:
            cam.kill()
        listener.stop()
        hook.stop()
        broker.stop()
    return {
        "cameras": cameras,
        "rules": cameras * (1 + len(OTHER_QUERIES)),
        "chunks_expected_about": expected,
        "webhook_s": percentiles(webhook),
        "mqtt_s": percentiles(mqtt),
        "service_cpu_cores": cpu,
    }


# --- report ---------------------------------------------------------------------------------------------
def print_report(results: dict[str, Any]) -> None:
    acc = results.get("accuracy")
    if acc:
        print("\nPer-chunk decisions (warm-up left out)")
        print("| rule | truth | chunks | method | precision | recall | F1 | false alerts / camera-hour |")
        print("|---|---|---|---|---|---|---|---|")
        for rule in ("a person", "a cat"):
            for view in VIEWS:
                r = acc[rule][view]
                for method in ("calibrated", "raw_leave_one_camera_out", "raw_best_in_hindsight"):
                    m = r[method]
                    print(
                        f"| {rule} | {view} | {r['chunks']} | {method} | {m['precision']:.3f} "
                        f"| {m['recall']:.3f} | {m['f1']:.3f} | {m['false_per_camera_hour']:.1f} |"
                    )
        fits = acc["thumbnails_agreeing_with_the_fitted_clip"]
        print(
            "thumbnails agreeing with the fitted clip: " + ", ".join(f"{k} {v:.3f}" for k, v in fits.items())
        )
        g = acc["gate"]
        print(
            f"\nVLM gate: {g['vlm_calls_per_camera_hour_with_gate']:.0f} calls / camera-hour with the gate"
            f" vs {g['vlm_calls_per_camera_hour_every_chunk']:.0f} calling on every chunk"
            f" ({g['calls_saved_factor']:.1f}x fewer); recall after verification"
            f" {g['recall_after_verification']:.3f}, false incidents {g['false_incidents']}"
        )
    lat = results.get("latency")
    if lat:
        for kind in ("webhook_s", "mqtt_s"):
            p = lat[kind]
            if p["n"]:
                print(
                    f"{lat['cameras']} cameras x 10 rules, chunk end -> {kind[:-2]} received: "
                    f"p50 {p['p50']:.3f} s, p95 {p['p95']:.3f} s, max {p['max']:.3f} s ({p['n']} incidents)"
                )
        print(f"service CPU: {lat['service_cpu_cores']:.2f} cores of {os.cpu_count()}")
    print(json.dumps(results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--minutes", type=float, default=6)
    p.add_argument("--latency-cameras", type=int, default=16)
    p.add_argument("--latency-minutes", type=float, default=3)
    p.add_argument("--parts", default="accuracy,latency")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rare", action="store_true", help="accuracy: rare, short events and a look per camera")
    p.add_argument("--dump", type=Path, help="accuracy: every decision and its chunk's true scene, as JSON")
    a = p.parse_args()
    if not gst_available():
        sys.exit("needs gst-rtsp-server: make rtsp-deps")
    parts = set(a.parts.split(","))
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
    }
    run: dict[str, Callable[[Path], dict[str, Any]]] = {
        "accuracy": lambda w: run_accuracy(w, a.cameras, a.minutes, a.seed, a.rare, a.dump),
        "latency": lambda w: run_latency(w, a.latency_cameras, a.latency_minutes, a.seed),
    }
    with tempfile.TemporaryDirectory(prefix="alerts-bench-") as tmp:
        for name in ("accuracy", "latency"):
            if name in parts:
                work = Path(tmp) / name
                work.mkdir()
                results[name] = run[name](work)
    print_report(results)


if __name__ == "__main__":
    main()
