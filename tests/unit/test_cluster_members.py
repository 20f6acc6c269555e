"""The pure part of stream ownership (core/cluster.py): who counts as a member, and who owns a stream."""

from __future__ import annotations

import math
from collections import Counter

from rtvi.core.cluster import Heartbeat, MemberView, owner_of

STREAMS = [f"cam-{i}" for i in range(3000)]


def test_owners_are_spread_and_only_a_leaving_member_s_streams_move() -> None:
    members = ["r0", "r1", "r2", "r3"]
    before = {s: owner_of(s, members) for s in STREAMS}
    load = Counter(before.values())
    assert set(load) == set(members)
    assert max(load.values()) < 1.15 * len(STREAMS) / len(members), load  # within 15 % of even
    after = {s: owner_of(s, ["r0", "r1", "r3"]) for s in STREAMS}  # r2 left
    assert all(after[s] == before[s] for s in STREAMS if before[s] != "r2")
    assert all(after[s] != "r2" for s in STREAMS)
    joined = {s: owner_of(s, [*members, "r4"]) for s in STREAMS}  # r4 joined: it takes, nobody else moves
    assert all(joined[s] in (before[s], "r4") for s in STREAMS)
    assert 0 < sum(joined[s] == "r4" for s in STREAMS) < len(STREAMS) / 3
    # The order members are listed in does not matter; nobody owns without members.
    assert all(owner_of(s, list(reversed(members))) == before[s] for s in STREAMS[:100])
    assert owner_of("cam-0", []) is None


def test_a_member_counts_while_ready_and_heard_within_its_session() -> None:
    view = MemberView()
    ready, warming = Heartbeat(True, 3.0, "a"), Heartbeat(False, 3.0, "b")
    view.hear("r0", ready, now=10.0)
    view.hear("r1", ready, now=10.5)
    view.hear("r2", warming, now=10.5)  # not ready yet: it knows too little to own streams
    assert view.members(now=11.0) == ["r0", "r1"]
    assert view.members(now=13.2) == ["r1"]  # r0's last heartbeat is 3.2 s old: lapsed
    view.hear("r1", None, now=13.3)  # a tombstone: r1 left, no need to wait for its session
    assert view.members(now=13.3) == []
    assert view.heard_from("r0") == 10.0
    assert view.next_lapse(now=13.3) == math.inf  # nobody ready left to lapse
    view.hear("r3", ready, now=12.0)
    assert view.next_lapse(now=13.3) == 15.0  # when the ownership thread next has to look, unasked
    view.forget_lapsed(now=10.0 + 31.0)  # long gone (ten sessions): the view stays bounded
    assert view.heard_from("r0") is None and view.heard_from("r2") is None


def test_a_heartbeat_round_trips_and_garbage_is_not_one() -> None:
    beat = Heartbeat(True, 6.0, "abc")
    assert Heartbeat.decode(beat.encode()) == beat
    assert Heartbeat.decode(b"not json") is None
    assert Heartbeat.decode(b'{"ready": true}') is None
