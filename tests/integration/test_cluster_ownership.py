"""Stream ownership (core/cluster.py) on a real tansu broker, without the service: each announced stream
runs on exactly one member, the one rendezvous hashing names; a member that leaves hands its streams over
at once, one killed -9 after its session lapses; a tombstone stops a stream."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from rtvi.core.cluster import StreamOwnership, owner_of
from rtvi.settings import ClusterSettings
from tests.kafka_redis import TansuBroker

SESSION_MS = 2000


def _settings(bootstrap: str, topic: str, replica_id: str) -> ClusterSettings:
    return ClusterSettings(
        cluster_bootstrap=bootstrap,
        cluster_topic=topic,
        cluster_partitions=6,
        cluster_session_timeout_ms=SESSION_MS,
        replica_id=replica_id,
    )


class Member:
    """One replica's ownership, with the streams its hooks say run here."""

    def __init__(self, bootstrap: str, topic: str, replica_id: str) -> None:
        self.id = replica_id
        self.running: set[str] = set()
        self._lock = threading.Lock()
        settings = _settings(bootstrap, topic, replica_id)
        self.ownership = StreamOwnership(settings, "test", start=self._start, stop=self._stop)

    def _start(self, stream_id: str) -> None:
        with self._lock:
            assert stream_id not in self.running, f"{stream_id} started twice"
            self.running.add(stream_id)

    def _stop(self, stream_id: str) -> None:
        with self._lock:
            self.running.discard(stream_id)


# A member in its own process, to be killed -9: it prints each stream it starts.
_CHILD = """
import sys, time
from rtvi.core.cluster import StreamOwnership
from tests.integration.test_cluster_ownership import _settings
settings = _settings(sys.argv[1], sys.argv[2], sys.argv[3])
StreamOwnership(settings, "test", start=lambda s: print(s, flush=True), stop=lambda s: None).start()
time.sleep(3600)
"""


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


@pytest.fixture()
def topic() -> str:
    return f"streams-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def members(broker: TansuBroker, topic: str) -> Iterator[list[Member]]:
    made = [Member(broker.bootstrap, topic, f"m{i}") for i in range(3)]
    for m in made:
        m.ownership.start()
    yield made
    for m in made:
        m.ownership.close()


def _placed(members: list[Member], cameras: set[str]) -> Callable[[], bool]:
    """Every camera runs exactly once, on the member rendezvous hashing names among `members`."""
    ids = sorted(m.id for m in members)

    def placed() -> bool:
        return all(m.running == {c for c in cameras if owner_of(c, ids) == m.id} for m in members)

    return placed


def test_each_stream_runs_on_exactly_one_member_and_moves_when_its_owner_leaves(
    members: list[Member],
) -> None:
    ids = sorted(m.id for m in members)
    _wait(lambda: all(m.ownership.members() == ids for m in members), 30, "every member sees the others")
    cameras = {f"cam-{i}" for i in range(12)}
    for cam in cameras:
        members[0].ownership.announce(cam, run=True)
    _wait(_placed(members, cameras), 30, "every camera running once, on its owner")
    assert sum(len(m.running) for m in members) == len(cameras)
    for m in members:
        assert m.running == m.ownership.owned()
    stayed = {m.id: set(m.running) for m in members[1:]}

    leaving = members[0]
    left = time.monotonic()
    leaving.ownership.close()
    assert leaving.running == set(), "a member that leaves stops its streams"
    _wait(_placed(members[1:], cameras), 30, "the hand-over")
    # A member that leaves says so: its streams move without waiting for its session to lapse.
    assert time.monotonic() - left < SESSION_MS / 1000
    for m in members[1:]:  # what a survivor ran, it still runs
        assert stayed[m.id] <= m.running

    members[1].ownership.announce("cam-0", run=False)  # a tombstone, from any member
    _wait(lambda: all("cam-0" not in m.running for m in members), 30, "cam-0 stopped")
    assert {c for m in members[1:] for c in m.running} == cameras - {"cam-0"}


def test_a_member_killed_hands_its_streams_over_once_its_session_lapses(
    members: list[Member], broker: TansuBroker, topic: str
) -> None:
    cmd = [sys.executable, "-c", _CHILD, broker.bootstrap, topic, "m3"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        everyone = sorted([m.id for m in members] + ["m3"])
        _wait(lambda: all(m.ownership.members() == everyone for m in members), 30, "the fourth member")
        cameras = {f"cam-{i}" for i in range(16)}
        for cam in cameras:
            members[0].ownership.announce(cam, run=True)
        its = {c for c in cameras if owner_of(c, everyone) == "m3"}
        assert its, "rendezvous hashing gives the fourth member some of 16 cameras"
        _wait(lambda: {c for m in members for c in m.running} == cameras - its, 30, "the others' cameras")
        started = set()
        assert child.stdout is not None
        while started != its:  # the child started exactly its own
            started.add(child.stdout.readline().strip())
            assert started <= its, started
        before = {m.id: set(m.running) for m in members}
        child.kill()
        killed = time.monotonic()
        _wait(_placed(members, cameras), 30, "the killed member's cameras on the others")
        took = time.monotonic() - killed
        # Not before its session lapsed, and soon after (a heartbeat, a read, the check).
        assert SESSION_MS / 1000 - 0.5 < took < SESSION_MS / 1000 + 2, took
        for m in members:
            assert before[m.id] <= m.running
    finally:
        child.kill()
        child.wait()


def test_a_hook_that_fails_for_one_stream_leaves_the_others_and_the_membership_alone(
    broker: TansuBroker, topic: str
) -> None:
    running: set[str] = set()

    def start(stream_id: str) -> None:  # the service's hook, failing as its registry read can
        if stream_id == "cam-bad":
            raise RuntimeError("its registry row could not be read")
        running.add(stream_id)

    settings = _settings(broker.bootstrap, topic, "solo")
    ownership = StreamOwnership(settings, "test", start=start, stop=running.discard).start()
    try:
        _wait(lambda: ownership.members() == ["solo"], 30, "ready")
        for cam in ("cam-bad", "cam-a", "cam-b"):
            ownership.announce(cam, run=True)
        _wait(lambda: running == {"cam-a", "cam-b"}, 30, "the other cameras")
        time.sleep(SESSION_MS / 1000 + 0.5)  # the thread still beats: still a member, still running them
        assert ownership.members() == ["solo"]
        ownership.announce("cam-c", run=True)
        _wait(lambda: "cam-c" in running, 30, "a camera announced after the failure")
    finally:
        ownership.close()
