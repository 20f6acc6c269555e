"""Search index speed: query latency at 10k / 100k / 1M chunks against brute-force numpy on the same
vectors in the same run, and insert throughput against the rate chunks are produced.

Synthetic unit vectors (384-d, the bundled model's size); each level is a fresh index (SQLite + an
in-memory matrix, core/index/sqlite.py) in a temporary directory. Latency is one query at a time, top 10,
unfiltered and with an asset filter that selects 1% of the chunks; numpy is
`argpartition(matrix @ query)` over a float32 matrix already in memory. Insert throughput is chunks per
second written in batches of 64 (what the index writer does), compared with what 16 live cameras at
10 s chunks produce (1.6 chunks/s).

When pymilvus and milvus-lite are installed (not rtvi dependencies: `.venv/bin/pip install pymilvus
milvus-lite`), levels up to MILVUS_MAX chunks also time Milvus Lite (FLAT index, after a flush) on the
same vectors: the embedded engine issue 12 suggested (docs/search.md).

Run: .venv/bin/python bench/search_bench.py [sizes...]   (default 10000 100000 1000000)
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rtvi.core.index.ann import AnnPolicy  # noqa: E402
from rtvi.core.index.base import IndexedChunk, SearchFilter  # noqa: E402
from rtvi.core.index.sqlite import SqliteChunkIndex  # noqa: E402

DIM = 384
QUERIES = 200
BATCH = 64
OWNERS = 100  # chunks spread over 100 files: an asset filter selects 1%
LIVE_RATE = 16 / 10  # chunks per second from 16 cameras at 10 s chunks
MILVUS_MAX = 100_000
MILVUS_QUERIES = 20


def chunks(vectors: np.ndarray, offset: int) -> list[IndexedChunk]:
    return [
        IndexedChunk(
            owner_id=f"file-{(offset + i) % OWNERS}",
            key=str(offset + i),
            live=False,
            source="clip.mp4",
            chunk_idx=offset + i,
            start_s=0.0,
            end_s=10.0,
            abs_start=None,
            abs_end=None,
            start_time="0.0",
            end_time="10.0",
            vector=v,
        )
        for i, v in enumerate(vectors)
    ]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def level(n: int, rng: np.random.Generator) -> dict[str, float]:
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = SqliteChunkIndex(Path(tmp), "bench", DIM, AnnPolicy(from_entries=0))  # exact: ann_bench.py
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            index.upsert(chunks(vectors[i : i + BATCH], i))
        out["insert_per_s"] = n / (time.perf_counter() - start)
        for name, where in (("index", None), ("index_filtered", SearchFilter(asset_ids=["file-7"]))):
            times = []
            for q in queries:
                t = time.perf_counter()
                hits = index.search(q, 10, where)
                times.append(time.perf_counter() - t)
                assert len(hits) == 10
            out[f"{name}_p50"], out[f"{name}_p95"] = percentiles(times)
        index.close()
    times = []
    for q in queries:
        t = time.perf_counter()
        scores = vectors @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, 10)[:10]
        _ = top[np.argsort(-scores[top])]  # ranked, as the index returns them
        times.append(time.perf_counter() - t)
    out["numpy_p50"], out["numpy_p95"] = percentiles(times)
    if n <= MILVUS_MAX and importlib.util.find_spec("pymilvus") is not None:
        out["milvus_p50"], out["milvus_p95"] = milvus_lite(vectors, queries[:MILVUS_QUERIES])
    return out


def milvus_lite(vectors: np.ndarray, queries: np.ndarray) -> tuple[float, float]:
    from pymilvus import DataType, MilvusClient

    with tempfile.TemporaryDirectory() as tmp:
        client = MilvusClient(uri=str(Path(tmp) / "bench.db"))
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        params = client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection("chunks", schema=schema, index_params=params)
        for i in range(0, len(vectors), 10_000):
            rows = [{"id": i + j, "vector": v} for j, v in enumerate(vectors[i : i + 10_000])]
            client.insert("chunks", rows)
        client.flush("chunks")
        times = []
        for q in queries:
            t = time.perf_counter()
            client.search("chunks", data=[q], limit=10)
            times.append(time.perf_counter() - t)
        client.close()
    return percentiles(times)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    rng = np.random.default_rng(0)
    print(
        "| chunks | search p50 / p95 ms | with an asset filter (1%) | numpy brute force p50 / p95 ms "
        "| search / numpy (p50) | inserts/s | inserts / 16 live cameras' rate |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        r = level(n, rng)
        print(
            f"| {n:,} | {r['index_p50']:.2f} / {r['index_p95']:.2f} | {r['index_filtered_p50']:.2f} / "
            f"{r['index_filtered_p95']:.2f} | {r['numpy_p50']:.2f} / {r['numpy_p95']:.2f} | "
            f"{r['index_p50'] / r['numpy_p50']:.2f}x | {r['insert_per_s']:,.0f} | "
            f"{r['insert_per_s'] / LIVE_RATE:,.0f}x |",
            flush=True,
        )
        if "milvus_p50" in r:
            print(f"|   Milvus Lite at {n:,}: p50 / p95 {r['milvus_p50']:.1f} / {r['milvus_p95']:.1f} ms |")


if __name__ == "__main__":
    main()
