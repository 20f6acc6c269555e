"""The SQLite index past its exact-search size (issue 25): the ANN path (faiss IVF + PQ codes, exact
re-rank) gives exact search's results on a small collection and recall >= 0.95 on a larger one, filters
stay exact, a restart reads the snapshot instead of every vector, a crash (kill -9 during the build, or
with changes the snapshot lacks) loses no committed entry, and the index is trained again once retention
has replaced its collection, without losing what is written meanwhile."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bench.vectors import centres, clustered

from rtvi.core.index.ann import AnnPolicy, latest_snapshot
from rtvi.core.index.base import IndexedChunk, SearchFilter
from rtvi.core.index.sqlite import SqliteChunkIndex

DIM = 32
ROOT = Path(__file__).resolve().parents[2]


def chunk(i: int, vector: np.ndarray, owners: int = 10) -> IndexedChunk:
    return IndexedChunk(
        owner_id=f"cam-{i % owners}",
        key=str(i),
        live=True,
        source="cam",
        chunk_idx=i,
        start_s=1e9 + i,
        end_s=1e9 + i + 1,
        abs_start=1e9 + i,
        abs_end=1e9 + i + 1,
        start_time=str(i),
        end_time=str(i + 1),
        vector=vector,
    )


def fill(index: SqliteChunkIndex, vectors: np.ndarray, start: int = 0, batch: int = 500) -> None:
    for i in range(0, len(vectors), batch):
        index.upsert([chunk(start + i + j, v) for j, v in enumerate(vectors[i : i + batch])])


def approximate(tmp: Path, **policy: int) -> SqliteChunkIndex:
    return SqliteChunkIndex(tmp, "ann-model", DIM, AnnPolicy(**policy))


def top_ids(index: SqliteChunkIndex, query: np.ndarray, where: SearchFilter | None = None) -> list[int]:
    return [h.chunk_idx for h in index.search(query, 10, where)]


def exact_top(vectors: np.ndarray, query: np.ndarray, keep: np.ndarray | None = None) -> set[int]:
    scores = vectors @ query
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    return set(np.argsort(-scores)[:10].tolist())


@pytest.fixture(scope="module")
def scenes() -> np.ndarray:
    return centres(200, DIM)


def test_a_small_collection_gives_exact_results_through_the_ann_path(
    tmp_path: Path, scenes: np.ndarray
) -> None:
    vectors = clustered(3000, scenes, seed=1)
    queries = clustered(20, scenes, seed=2)
    exact = SqliteChunkIndex(tmp_path / "exact", "ann-model", DIM, AnnPolicy(from_entries=0))
    fill(exact, vectors)
    index = approximate(tmp_path / "ann", from_entries=1000)
    fill(index, vectors)
    assert index.wait_for_build(60) and index.approximate and not exact.approximate
    for q in queries:
        expected = exact.search(q, 10)
        got = index.search(q, 10)
        assert [h.entry_id for h in got] == [h.entry_id for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)
    # The codes, not the vectors, are in memory.
    assert index.footprint().memory_bytes < exact.footprint().memory_bytes / 2


def test_recall_on_a_larger_collection_and_exact_filters(tmp_path: Path, scenes: np.ndarray) -> None:
    vectors = clustered(40_000, scenes, seed=3)
    queries = clustered(50, scenes, seed=4)
    index = approximate(tmp_path, from_entries=10_000)
    fill(index, vectors)
    assert index.wait_for_build(120) and index.approximate
    recall = np.mean([len(set(top_ids(index, q)) & exact_top(vectors, q)) / 10 for q in queries])
    assert recall >= 0.95, recall

    ids = np.arange(len(vectors))
    # A camera's last 10,000 chunks (1,000 entries: scored exactly), one camera of ten (4,000) and a
    # time window keeping 30% (both: the ANN scan restricted to them): no hit outside the filter, and the
    # same hits as exact search.
    recent = SearchFilter(stream_ids=["cam-3"], abs_from=1e9 + 30_000)
    one_camera = SearchFilter(stream_ids=["cam-3"])
    window = SearchFilter(abs_from=1e9 + 10_000, abs_to=1e9 + 22_000)
    for where, keep in (
        (recent, (ids % 10 == 3) & (ids + 1 > 30_000)),
        (one_camera, ids % 10 == 3),
        (window, (ids + 1 > 10_000) & (ids < 22_000)),
    ):
        filtered_recall = []
        for q in queries[:20]:
            got = top_ids(index, q, where)
            assert len(got) == 10 and all(keep[i] for i in got)
            filtered_recall.append(len(set(got) & exact_top(vectors, q, keep)) / 10)
        assert np.mean(filtered_recall) >= 0.95, (where, np.mean(filtered_recall))
    index.close()


def test_a_restart_reads_the_snapshot_and_a_crash_loses_nothing(tmp_path: Path, scenes: np.ndarray) -> None:
    vectors = clustered(12_000, scenes, seed=5)
    index = approximate(tmp_path, from_entries=4000, snapshot_every=1_000_000)
    fill(index, vectors[:8000])
    assert index.wait_for_build(60) and index.approximate
    index.close()  # snapshots what the build's snapshot lacked
    snapshot = latest_snapshot(tmp_path / "ann", "ann-model:32")
    assert snapshot is not None

    reopened = approximate(tmp_path, from_entries=4000, snapshot_every=1_000_000)
    assert reopened.approximate and len(reopened) == 8000
    # After the snapshot: more chunks, the oldest 500 expired, and the newest rewritten with another
    # vector (the row that had the highest id is replaced: its id must not come back). Then a crash:
    # the instance is dropped without close, so nothing of this reaches the snapshot.
    fill(reopened, vectors[8000:12_000], start=8000)
    assert reopened.expire_live(None, 500) == 500
    moved = clustered(1, scenes, seed=6)[0]
    reopened.upsert([chunk(11_999, moved)])
    assert latest_snapshot(tmp_path / "ann", "ann-model:32") == snapshot

    after_crash = approximate(tmp_path, from_entries=4000, snapshot_every=1_000_000)
    assert after_crash.approximate and len(after_crash) == 11_500
    for i in (8000, 9500, 11_998):  # written after the snapshot: found as themselves
        assert top_ids(after_crash, vectors[i])[0] == i
    rewritten = top_ids(after_crash, moved)
    assert rewritten[0] == 11_999 and rewritten.count(11_999) == 1
    for q in clustered(20, scenes, seed=7):  # expired entries never come back
        assert min(top_ids(after_crash, q)) >= 500


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bench.vectors import centres, clustered
    from rtvi.core.index.ann import AnnPolicy
    from rtvi.core.index.sqlite import SqliteChunkIndex
    from tests.unit.test_ann_index import DIM, chunk

    policy = AnnPolicy(from_entries=5000)
    index = SqliteChunkIndex(Path(sys.argv[1]), "ann-model", DIM, policy)
    vectors = clustered(200_000, centres(200, DIM), seed=8)
    for i in range(0, len(vectors), 250):
        index.upsert([chunk(i + j, v) for j, v in enumerate(vectors[i : i + 250])])
        print(i + 250, index._building is not None, flush=True)
    """
)


def test_the_index_is_trained_again_once_its_collection_has_turned_over(
    tmp_path: Path, scenes: np.ndarray
) -> None:
    """Retention all day: the oldest go, new scenes come. Once as many rows were written since training
    as it was trained on, a new index is built in the background while the old one serves; what is
    written and removed during the build is in the new one; a restart does not train again."""
    first, later = clustered(3000, scenes[:100], seed=11), clustered(6000, scenes[100:], seed=12)
    index = approximate(tmp_path, from_entries=2000)
    fill(index, first)
    assert index.wait_for_build(60) and index.approximate
    trained = latest_snapshot(tmp_path / "ann", "ann-model:32")
    assert trained is not None
    live = dict(enumerate(first))
    oldest, written = 0, len(first)
    seen_building = False
    while not seen_building:  # 500 new, 500 oldest out, until a new build runs (and once more meanwhile)
        assert written < len(first) + len(later), "no new build"
        seen_building = not index.wait_for_build(0)
        new = later[written - len(first) : written - len(first) + 500]
        fill(index, new, start=written)
        live |= {written + j: v for j, v in enumerate(new)}
        written += len(new)
        assert index.expire_live(None, 500) == 500
        for i in range(oldest, oldest + 500):
            del live[i]
        oldest += 500
    assert index.wait_for_build(60) and index.approximate
    retrained = latest_snapshot(tmp_path / "ann", "ann-model:32")
    assert retrained is not None and retrained[1] > trained[1]  # a new build: a later mark
    ids, vectors = np.asarray(list(live)), np.stack(list(live.values()))
    for q in clustered(20, scenes[100:], seed=13):
        got = top_ids(index, q)
        assert set(got) <= set(live)  # nothing removed comes back
        assert len(set(got) & set(ids[np.argsort(-(vectors @ q))[:10]].tolist())) >= 9
    for i in (written - 1, written - 2000, oldest):
        assert top_ids(index, live[i])[0] == i
    index.close()
    again = approximate(tmp_path, from_entries=2000)
    again.upsert([chunk(written, later[-1])])
    assert again.approximate and again.wait_for_build(0)  # trained on this collection already: no build
    again.close()


def test_kill_9_during_the_build_loses_no_committed_entry(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert writer.stdout is not None
    committed = 0
    try:
        for line in writer.stdout:
            count, building = line.split()
            committed = int(count)
            if building == "True":  # the build runs: kill in the middle of it
                writer.send_signal(signal.SIGKILL)
                break
    finally:
        writer.kill()
        writer.wait()
    assert committed >= 5000, "the writer never started a build"

    index = approximate(tmp_path, from_entries=5000)
    assert len(index) >= committed  # the batch in flight at the kill may have committed too
    vectors = clustered(200_000, centres(200, DIM), seed=8)
    for i in range(0, committed, max(1, committed // 25)):
        assert top_ids(index, vectors[i])[0] == i
    assert index.wait_for_build(60) and index.approximate  # the interrupted build runs again
    for i in (0, committed // 2, committed - 1):
        assert top_ids(index, vectors[i])[0] == i
