"""The search index at millions of chunks (issue 25): the ANN path (core/index/ann.py) against exact search
on the same vectors, in the same run.

For each size, a SQLite index is written on disk (the service's schema; rows bulk-inserted, since the
service's own insert path would take hours to reach 10M) with synthetic clustered unit vectors
(bench/vectors.py: a thousand chunks per scene), the ANN snapshot is built from it the way the service
builds it (streamed: a training sample and one batch of vectors in memory), and then, in a fresh process
(so its memory is the index's alone), the service's SqliteChunkIndex is opened and timed:

- start-up: opening the index (reads the snapshot, no vector);
- search: 200 queries one at a time, top 10, p50 / p95, and recall@10 against exact search on the same
  vectors (computed here block by block, never holding the collection); the same with a filter keeping
  one camera of 100 (1%);
- resident memory (VmRSS) after the searches, and the peak (VmHWM);
- inserts: 2,000 chunks through `upsert` in batches of 64 (what the index writer does), against what 100
  cameras at 10 s chunks produce (10 chunks/s).

With --cold, the ANN index is also opened `rounds` more times with the kernel's page cache dropped
before each open (as after a reboot: needs root), so start-up reads the snapshot from disk and the
searches read their candidates' vectors from disk; the first search's time is printed apart from the 200
that follow.

The baseline is today's exact index (the whole collection as a float32 matrix in memory), opened and
searched the same way where it fits (RTVI_INDEX_ANN_FROM=0): at 10M chunks of 384-d the matrix alone is
15.4 GB and loading it needs twice that, more than this machine has, so it is measured up to 1M.

Run: .venv/bin/python bench/ann_bench.py [--dim 384] [--rounds 3] [--exact-upto 1000000] [--cold] SIZE...
(default 1000000 10000000). Each size needs ~1.8 KB of disk per chunk (384-d) in $TMPDIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.vectors import centres, clustered  # noqa: E402
from rtvi.core.index.ann import AnnPolicy, build_from_sqlite, write_snapshot  # noqa: E402
from rtvi.core.index.base import SearchFilter, collection_of, entry_id  # noqa: E402
from rtvi.core.index.sqlite import SqliteChunkIndex  # noqa: E402

MODEL = "bench"
BLOCK = 100_000  # vectors generated (and inserted) at a time
QUERIES = 200
CAMERAS = 100  # chunk i belongs to camera i % 100: a one-camera filter keeps 1%
INSERTS, INSERT_BATCH = 2000, 64
CAMERAS_AT_10S = 100 / 10  # chunks per second from 100 cameras at 10 s chunks


def block(n: int, dim: int, b: int) -> np.ndarray:
    """Block b of the collection (reproducible: ground truth regenerates it)."""
    size = min(BLOCK, n - b * BLOCK)
    return clustered(size, centres(max(16, n // 1000), dim), seed=1000 + b)


def queries(n: int, dim: int) -> np.ndarray:
    return clustered(QUERIES, centres(max(16, n // 1000), dim), seed=7)


def write_collection(folder: Path, n: int, dim: int) -> float:
    """The rows, as the service writes them (schema and all). -> seconds."""
    SqliteChunkIndex(folder, MODEL, dim, AnnPolicy(from_entries=0)).close()  # the schema
    collection = collection_of(MODEL, dim)
    db = sqlite3.connect(folder / "index.db", isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    start = time.perf_counter()
    for b in range((n + BLOCK - 1) // BLOCK):
        vectors = block(n, dim, b)
        rows = []
        for j, v in enumerate(vectors):
            i = b * BLOCK + j
            owner = f"cam-{i % CAMERAS}"
            t = 1.7e9 + i
            rows.append(
                (i + 1, collection, entry_id(collection, owner, str(i)), owner, 1, owner, i, t, t + 10,
                 t, t + 10, str(t), str(t + 10), None, 0, v.tobytes(), 0)
            )  # fmt: skip
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO chunks (id, collection, entry_id, owner_id, live, source, chunk_idx, start_s, end_s,"
            " abs_start, abs_end, start_time, end_time, caption, thumbnail, vector, thumbnail_bytes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


def build_snapshot(folder: Path, n: int, dim: int) -> float:
    """The ANN snapshot, as the service's build thread makes it. -> seconds."""
    start = time.perf_counter()
    db = sqlite3.connect(folder / "index.db")
    ann = build_from_sqlite(db, collection_of(MODEL, dim), dim, upto=n, entries=n)
    db.close()
    write_snapshot(folder / "ann", collection_of(MODEL, dim), ann, n)
    return time.perf_counter() - start


def ground_truth(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top 10 of every query (chunk indices), unfiltered and within camera 0's chunks."""
    q = queries(n, dim)
    best = np.full((QUERIES, 10), -np.inf, np.float32), np.zeros((QUERIES, 10), np.int64)
    best_cam = np.full((QUERIES, 10), -np.inf, np.float32), np.zeros((QUERIES, 10), np.int64)
    for b in range((n + BLOCK - 1) // BLOCK):
        ids = np.arange(b * BLOCK, b * BLOCK + min(BLOCK, n - b * BLOCK))
        scores = q @ block(n, dim, b).T
        for (top_s, top_i), keep in ((best, slice(None)), (best_cam, ids % CAMERAS == 0)):
            s = np.concatenate([top_s, scores[:, keep]], axis=1)
            i = np.concatenate(
                [top_i, np.broadcast_to(ids[keep], (QUERIES, int(np.size(ids[keep]))))], axis=1
            )
            order = np.argsort(-s, axis=1)[:, :10]
            top_s[:] = np.take_along_axis(s, order, 1)
            top_i[:] = np.take_along_axis(i, order, 1)
    return best[1], best_cam[1]


def memory() -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(status[k].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM")}  # GiB


def measure(folder: Path, n: int, dim: int, ann_from: int, truth: Path) -> dict[str, float]:
    """In a fresh process: open the index as the service does, search, insert."""
    gt = np.load(truth)
    q = queries(n, dim)
    start = time.perf_counter()
    index = SqliteChunkIndex(folder, MODEL, dim, AnnPolicy(from_entries=ann_from))
    out: dict[str, float] = {"startup_s": time.perf_counter() - start, "approximate": index.approximate}
    for name, where, expected in (
        ("all", None, gt["all"]),
        ("one_camera", SearchFilter(stream_ids=["cam-0"]), gt["camera"]),
    ):
        t = time.perf_counter()
        index.search(q[0], 10, where)  # warms what it reads
        out[f"{name}_first_ms"] = (time.perf_counter() - t) * 1e3
        times, recall = [], []
        for i, query in enumerate(q):
            t = time.perf_counter()
            hits = index.search(query, 10, where)
            times.append(time.perf_counter() - t)
            recall.append(len({h.chunk_idx for h in hits} & set(expected[i].tolist())) / 10)
        ms = np.asarray(times) * 1e3
        out |= {
            f"{name}_p50_ms": float(np.percentile(ms, 50)),
            f"{name}_p95_ms": float(np.percentile(ms, 95)),
            f"{name}_recall": float(np.mean(recall)),
        }
    out |= {f"{k}_gib": v for k, v in memory().items()}
    new = clustered(INSERTS, centres(16, dim), seed=int(time.time()))
    from rtvi.core.index.base import IndexedChunk

    start = time.perf_counter()
    for i in range(0, INSERTS, INSERT_BATCH):
        index.upsert(
            [
                IndexedChunk(owner_id="cam-new", key=f"{time.time_ns()}-{j}", live=True,
                             source="cam-new", chunk_idx=n + i + j, start_s=2e9, end_s=2e9 + 10,
                             abs_start=2e9, abs_end=2e9 + 10, start_time="", end_time="", vector=v)
                for j, v in enumerate(new[i : i + INSERT_BATCH])
            ]
        )  # fmt: skip
    out["insert_per_s"] = INSERTS / (time.perf_counter() - start)
    index.remove_owner("cam-new")  # the next round measures the same collection
    index.close()
    return out


def drop_page_cache() -> None:
    """What a reboot does to the files' pages (root only)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def level(n: int, dim: int, rounds: int, exact_upto: int, cold: bool) -> dict[str, object]:
    result: dict[str, object] = {"chunks": n, "dim": dim}
    with tempfile.TemporaryDirectory(prefix="ann-bench-") as tmp:
        folder = Path(tmp)
        result["write_s"] = write_collection(folder, n, dim)
        result["build_s"] = build_snapshot(folder, n, dim)
        result["snapshot_gib"] = sum(f.stat().st_size for f in (folder / "ann").iterdir()) / 2**30
        result["db_gib"] = (folder / "index.db").stat().st_size / 2**30
        start = time.perf_counter()
        top, top_camera = ground_truth(n, dim)
        result["ground_truth_s"] = time.perf_counter() - start
        np.savez(folder / "truth.npz", all=top, camera=top_camera)
        modes = [("ann", 1)] + [("ann_cold", 1)] * cold + [("exact", 0)] * (n <= exact_upto)
        for mode, ann_from in modes:
            runs = []
            for _ in range(rounds):
                if mode == "ann_cold":
                    drop_page_cache()
                proc = subprocess.run(
                    [sys.executable, __file__, "--measure", str(folder), str(n), str(dim), str(ann_from)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            result[mode] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
            result[mode + "_runs"] = runs
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--exact-upto", type=int, default=1_000_000)
    parser.add_argument("--cold", action="store_true", help="also open with the page cache dropped (root)")
    parser.add_argument("--measure", nargs=4)
    args = parser.parse_args()
    if args.measure:
        folder, n, dim, ann_from = args.measure
        out = measure(Path(folder), int(n), int(dim), int(ann_from), Path(folder) / "truth.npz")
        print(json.dumps(out))
        return
    print(
        f"cores: {os.cpu_count()}; queries: {QUERIES} one at a time, top 10; medians of {args.rounds} opens"
        + ("; ann_cold: the page cache dropped before each open" if args.cold else "")
    )
    for n in args.sizes:
        result = level(n, args.dim, args.rounds, args.exact_upto, args.cold)
        print(json.dumps(result), flush=True)
        for mode in ("ann", "ann_cold", "exact"):
            if mode in result:
                r = result[mode]
                assert isinstance(r, dict)
                inserts = r["insert_per_s"]
                print(
                    f"{n:>11,} x {args.dim}-d {mode:8}: start-up {r['startup_s']:.2f} s, first search"
                    f" {r['all_first_ms']:.0f} ms, then p50/p95"
                    f" {r['all_p50_ms']:.1f}/{r['all_p95_ms']:.1f} ms recall@10 {r['all_recall']:.3f};"
                    f" one camera {r['one_camera_p50_ms']:.1f}/{r['one_camera_p95_ms']:.1f} ms recall"
                    f" {r['one_camera_recall']:.3f}; RSS {r['VmRSS_gib']:.2f} GiB"
                    f" (peak {r['VmHWM_gib']:.2f}); inserts {inserts:,.0f}/s"
                    f" = {inserts / CAMERAS_AT_10S:,.0f}x 100 cameras",
                    flush=True,
                )


if __name__ == "__main__":
    main()
