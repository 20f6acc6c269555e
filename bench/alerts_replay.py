"""Replays alert calibrations offline on the decisions `alerts_bench.py --dump` wrote: the same scores and
truths, another floor or warm-up. With the service's own settings it reproduces the service's decisions
(it says how many differ); `--floor 0.1 --no-warmup-hold` is the calibration before the model's floor.

Run: .venv/bin/python bench/alerts_replay.py decisions.json [--floor 0.25] [--no-warmup-hold]
     [--sensitivity 0.5] [--warmup 12] [--window 360]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.alerts_bench import FLAGGED, RULES, ChunkTruth, by_camera, evaluate  # noqa: E402
from rtvi.core.alerts.calibration import ScoreHistory, threshold  # noqa: E402
from rtvi.core.models.bundled import MATCH_FLOOR  # noqa: E402


def replay(seq: list[dict[str, Any]], a: argparse.Namespace) -> list[bool]:
    """One stream's decisions for one rule, in chunk order -> whether each chunk stood out."""
    history, flags = ScoreHistory(a.window), []
    for d in seq:
        bar = threshold(history, a.sensitivity, None, a.warmup, a.floor)
        score = d["score"]
        history.add(score, stood_out=bar.holds_out(score) if a.warmup_hold else bar.passed(score))
        flags.append(bar.passed(score))
    return flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump", type=Path)
    p.add_argument("--floor", type=float, default=MATCH_FLOOR)
    p.add_argument("--no-warmup-hold", dest="warmup_hold", action="store_false")
    p.add_argument("--sensitivity", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=12)
    p.add_argument("--window", type=int, default=360)
    a = p.parse_args()
    rows = json.loads(a.dump.read_text())
    truth: dict[str, dict[int, ChunkTruth]] = {}
    for d in rows:
        if "shown" in d:
            truth.setdefault(d["stream_id"], {})[d["chunk_idx"]] = ChunkTruth(
                d["middle"], d["shown"], d["near"], d["span"]
            )
    print("| rule | truth | replayed | the service | raw, leave one camera out | differing decisions |")
    print("|---|---|---|---|---|---|")
    for name, wanted in RULES:
        per: dict[str, list[dict[str, Any]]] = {}
        for d in rows:
            if d["rule"] == name:
                per.setdefault(d["stream_id"], []).append(d)
        scored = [d for seq in per.values() for d in seq]
        replayed: dict[tuple[str, int], bool] = {}
        for cam, seq in per.items():
            seq.sort(key=lambda d: d["chunk_idx"])
            replayed.update({(cam, d["chunk_idx"]): f for d, f in zip(seq, replay(seq, a), strict=True)})
        per_key = {(d["stream_id"], d["chunk_idx"]): d for d in scored}
        service = {k: d["outcome"] in FLAGGED for k, d in per_key.items()}
        mine, theirs = by_camera(scored, replayed, truth, wanted), by_camera(scored, service, truth, wanted)
        armed = [k for k in service if per_key[k]["outcome"] != "warming-up"]
        differ = sum(replayed[k] != service[k] for k in armed)
        for i, view in enumerate(mine):
            r, s = evaluate(mine[view], 2), evaluate(theirs[view], 2)
            print(
                f"| {name} | {view} | {figures(r['calibrated'])} | {figures(s['calibrated'])} "
                f"| {figures(r['raw_leave_one_camera_out'])} | {differ if i == 0 else ''} |"
            )


def figures(m: dict[str, float]) -> str:
    return f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"


if __name__ == "__main__":
    main()
