"""Stream ownership (core/cluster.py) on a real tansu broker, without the service: each announced stream
runs on exactly one member, a member that leaves hands its streams over, a tombstone stops a stream."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from rtvi.core.cluster import StreamOwnership
from rtvi.settings import ClusterSettings
from tests.kafka_redis import TansuBroker


class Member:
    """One replica's ownership, with the streams its hooks say run here."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.running: set[str] = set()
        self._lock = threading.Lock()
        cluster = ClusterSettings(
            cluster_bootstrap=bootstrap,
            cluster_topic=topic,
            cluster_partitions=6,
            cluster_session_timeout_ms=2000,
            replica_id="",
        )
        self.ownership = StreamOwnership(cluster, "test", start=self._start, stop=self._stop)

    def _start(self, stream_id: str) -> None:
        with self._lock:
            assert stream_id not in self.running, f"{stream_id} started twice"
            self.running.add(stream_id)

    def _stop(self, stream_id: str) -> None:
        with self._lock:
            self.running.discard(stream_id)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


@pytest.fixture()
def members(broker: TansuBroker) -> Iterator[list[Member]]:
    topic = f"streams-{uuid.uuid4().hex[:8]}"
    made = [Member(broker.bootstrap, topic) for _ in range(3)]
    for m in made:
        m.ownership.start()
    yield made
    for m in made:
        m.ownership.close()


def test_each_stream_runs_on_exactly_one_member_and_moves_when_its_owner_leaves(
    members: list[Member],
) -> None:
    _wait(lambda: sum(len(m.ownership.assigned_partitions()) for m in members) == 6, 30, "assignment")
    assert all(m.ownership.assigned_partitions() for m in members), "every member has partitions"
    cameras = {f"cam-{i}" for i in range(12)}
    for cam in cameras:
        members[0].ownership.announce(cam, run=True)

    def placed() -> bool:
        return sorted(c for m in members for c in m.running) == sorted(cameras)

    _wait(placed, 30, "every camera running once")
    for m in members:
        assert m.running == m.ownership.owned()
    stayed = {id(m): set(m.running) for m in members[1:]}

    leaving = members[0]
    leaving.ownership.close()
    assert leaving.running == set(), "a member that leaves stops its streams"
    _wait(lambda: {c for m in members[1:] for c in m.running} == cameras, 30, "the hand-over")
    assert sum(len(m.running) for m in members[1:]) == len(cameras)
    for m in members[1:]:  # incremental rebalance: what a survivor ran, it still runs
        assert stayed[id(m)] <= m.running

    members[1].ownership.announce("cam-0", run=False)  # a tombstone, from any member
    _wait(lambda: all("cam-0" not in m.running for m in members), 30, "cam-0 stopped")
    assert {c for m in members[1:] for c in m.running} == cameras - {"cam-0"}
