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

from bench.alerts_bench import FLAGGED, at_cut, evaluate  # noqa: E402
from bench.oracle_vlm import PEOPLE  # noqa: E402
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
    truth: dict[str, dict[int, str]] = {}
    for d in rows:
        if d["truth"] is not None:
            truth.setdefault(d["stream_id"], {})[d["chunk_idx"]] = d["truth"]
    print("| rule | chunks | replayed | the service | raw, leave one camera out | differing decisions |")
    print("|---|---|---|---|---|---|")
    for name, wanted in (("a person", set(PEOPLE)), ("a cat", {"cat"})):
        per: dict[str, list[dict[str, Any]]] = {}
        for d in rows:
            if d["rule"] == name:
                per.setdefault(d["stream_id"], []).append(d)
        replayed: dict[str, list[tuple[float, bool, bool]]] = {}
        service: dict[str, list[tuple[float, bool, bool]]] = {}
        clean_replayed: dict[str, list[tuple[float, bool, bool]]] = {}
        clean_service: dict[str, list[tuple[float, bool, bool]]] = {}
        differ = 0
        for cam, seq in per.items():
            seq.sort(key=lambda d: d["chunk_idx"])
            for d, flag in zip(seq, replay(seq, a), strict=True):
                if d["outcome"] == "warming-up" or d["truth"] is None:
                    continue
                positive = d["truth"] in wanted
                differ += flag != (d["outcome"] in FLAGGED)
                replayed.setdefault(cam, []).append((d["score"], flag, positive))
                service.setdefault(cam, []).append((d["score"], d["outcome"] in FLAGGED, positive))
                if not at_cut(truth[cam], d["chunk_idx"]):
                    clean_replayed.setdefault(cam, []).append((d["score"], flag, positive))
                    clean_service.setdefault(cam, []).append((d["score"], d["outcome"] in FLAGGED, positive))
        for chunks, mine, theirs in (
            ("all", replayed, service),
            ("away from cuts", clean_replayed, clean_service),
        ):
            r, s = evaluate(mine, 2), evaluate(theirs, 2)

            def f(m: dict[str, float]) -> str:
                return f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"

            print(
                f"| {name} | {chunks} | {f(r['calibrated'])} | {f(s['calibrated'])} "
                f"| {f(r['raw_leave_one_camera_out'])} | {differ if chunks == 'all' else ''} |"
            )


if __name__ == "__main__":
    main()
