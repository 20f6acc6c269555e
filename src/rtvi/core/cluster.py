"""Live stream ownership over Kafka (RTVI_CLUSTER_BOOTSTRAP): which replica decodes which camera.

Two compacted topics carry it:
- the streams topic (RTVI_CLUSTER_TOPIC, default `rtvi-<service>-streams`): key = stream id, value b"run",
  a tombstone once the stream's inference stops. Every replica reads all of it, so each knows every
  stream that runs.
- the members topic (`<streams topic>-members`, one partition): every replica writes a heartbeat under
  its replica id every tenth of the session timeout, and a tombstone when it leaves. A replica counts as a
  member while its last heartbeat was read less than its session timeout ago, by the reader's own
  monotonic clock, so the replicas' clocks need not agree.

A stream runs on the member with the highest rendezvous score (a hash of member and stream): every
replica computes the same owner from the same members, a member that dies or leaves moves only its own
streams, and one that joins takes only the streams it now wins. A dead replica's cameras therefore move
one session timeout after its last heartbeat, with no rebalance round: Kafka's consumer group (used
before) added a broker-paced round on top, 3 s on every take-over on the broker the tests run
(docs/scale-out.md, "Failover, measured"). Replica ids must be unique (RTVI_REPLICA_ID); a replica that
hears its own id from another process says so in its log.

Views differ for a moment around a change (each replica reads a heartbeat or a tombstone at its own
time): a camera may then run on two replicas for up to a heartbeat, producing the same chunk keys, or on
none, which is within the failover window. A replica that cannot write its heartbeat for a session
timeout (the others have dropped it by then) stops its cameras; one that cannot read the members topic
changes nothing for half a session, then gives its cameras up and says it is not ready.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from rtvi.settings import ClusterSettings, replica_name

log = logging.getLogger(__name__)

RUN = b"run"
StreamHook = Callable[[str], None]  # called with a stream id on the ownership thread


def heartbeat_interval_ms(session_timeout_ms: int) -> int:
    """A tenth of the session timeout (at least 100 ms): a replica that dies is dropped a session timeout
    after its last heartbeat, so between 0.9 and 1 session timeout after it died."""
    return max(100, session_timeout_ms // 10)


def owner_of(stream_id: str, members: list[str]) -> str | None:
    """The member that runs `stream_id` (rendezvous hashing): the same on every replica that sees the
    same members; when a member goes, only its streams change owner."""
    return max(members, key=lambda m: _score(m, stream_id), default=None)


def _score(member: str, stream_id: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{stream_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a replica says of itself on the members topic."""

    ready: bool  # it has read the members topic long enough to know the others: it may own streams
    session_s: float  # how long after this heartbeat it is to be counted as a member
    incarnation: str  # one per process: tells two processes with the same replica id apart

    def encode(self) -> bytes:
        return json.dumps(
            {"ready": self.ready, "session_s": self.session_s, "incarnation": self.incarnation}
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> Heartbeat | None:
        try:
            d = json.loads(value)
            return cls(bool(d["ready"]), float(d["session_s"]), str(d["incarnation"]))
        except (ValueError, KeyError, TypeError):
            return None


class MemberView:
    """This replica's view of the members: who was heard from, when (monotonic seconds, passed in)."""

    def __init__(self) -> None:
        self._heard: dict[str, tuple[float, Heartbeat]] = {}

    def hear(self, member: str, beat: Heartbeat | None, now: float) -> None:
        """A heartbeat read from the members topic (None: a tombstone, the member left)."""
        if beat is None:
            self._heard.pop(member, None)
        else:
            self._heard[member] = (now, beat)

    def heard_from(self, member: str) -> float | None:
        entry = self._heard.get(member)
        return entry[0] if entry is not None else None

    def members(self, now: float) -> list[str]:
        """The ready members whose session has not lapsed, sorted."""
        return sorted(m for m, (at, beat) in self._heard.items() if beat.ready and now - at <= beat.session_s)

    def next_lapse(self, now: float) -> float:
        """When the next ready member's session lapses, unless heard from again (inf: none will)."""
        ends = [at + beat.session_s for at, beat in self._heard.values() if beat.ready]
        return min((end for end in ends if end >= now), default=math.inf)

    def forget_lapsed(self, now: float) -> None:
        """Drop what is long past (a member gone for ten sessions): the view stays bounded."""
        for m in [m for m, (at, beat) in self._heard.items() if now - at > 10 * beat.session_s]:
            del self._heard[m]


class StreamOwnership:
    def __init__(self, settings: ClusterSettings, service: str, start: StreamHook, stop: StreamHook) -> None:
        bootstrap = self.bootstrap = settings.cluster_bootstrap
        # RTVI_CLUSTER_TOPIC, else one topic per service: its replicas share the streams on it.
        self.topic = settings.cluster_topic or f"rtvi-{service}-streams"
        self.members_topic = f"{self.topic}-members"
        self.partitions = settings.cluster_partitions
        self.me = replica_name(settings)
        self.session_s = settings.cluster_session_timeout_ms / 1000
        self.heartbeat_s = heartbeat_interval_ms(settings.cluster_session_timeout_ms) / 1000
        self._start = start
        self._stop = stop
        self._lock = threading.Lock()
        self._view = MemberView()
        self._incarnation = uuid.uuid4().hex
        self._runs: set[str] = set()  # streams the streams topic says run (all of them, any owner)
        self._runs_changed = False  # since the last decision
        self._running: set[str] = set()  # those started here
        self._members: list[str] = []  # the members the last decision saw
        self._ready = False
        self._acked = time.monotonic()  # the last heartbeat the broker took
        self._warned_twin = False
        self._topics_made = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})

    # --- what this replica runs -----------------------------------------------------------------
    def owned(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def members(self) -> list[str]:
        """The members this replica counted at its last decision (itself included once ready)."""
        with self._lock:
            return list(self._members)

    # --- announcing ------------------------------------------------------------------------------
    def announce(self, stream_id: str, run: bool, timeout: float = 10.0) -> None:
        """Record that a stream runs (or no longer does); its owner, wherever it is, acts on it."""
        self._producer.produce(self.topic, key=stream_id.encode(), value=RUN if run else None)
        if self._producer.flush(timeout) > 0:
            raise KafkaException(f"the cluster topic {self.topic} did not take the record in {timeout} s")

    # --- membership ------------------------------------------------------------------------------
    def start(self) -> StreamOwnership:
        try:
            self._ensure_topics()
        except KafkaException as exc:  # the thread tries again until the broker answers
            log.warning("cluster: the topics could not be made yet: %s", exc)
        self._thread = threading.Thread(target=self._run, name="rtvi-ownership", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop this replica's streams and leave (a tombstone: the others take its streams at once)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._producer.flush(timeout)

    def _ensure_topics(self) -> None:
        if self._topics_made:
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        compact = {"cleanup.policy": "compact"}
        # Heartbeats: the newest per replica is all that matters; an hourly segment lets Kafka compact the
        # rest (the default segment closes only after 7 days or 1 GB).
        beats = compact | {"segment.ms": "3600000"}
        new = [
            NewTopic(self.topic, self.partitions, config=compact),
            NewTopic(self.members_topic, 1, config=beats),
        ]
        for future in admin.create_topics(new).values():
            try:
                future.result(15)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                    raise
        self._topics_made = True

    def _consumer(self) -> Consumer:
        """Every partition of the streams topic from its beginning (the state), the members topic from
        its end (only heartbeats written from now on say who is alive)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # librdkafka wants a group id even for assigned partitions; nothing is ever committed.
                "group.id": f"rtvi-ownership-{self._incarnation}",
                "enable.auto.commit": False,
                # A heartbeat is read as soon as it is written: a broker holds an idle fetch this long.
                "fetch.wait.max.ms": 50,
            }
        )
        topic = consumer.list_topics(self.topic, timeout=15).topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            consumer.close()  # a topic just made may not be in the metadata yet: _run tries again
            raise KafkaException(f"no partitions of {self.topic} in the metadata yet")
        streams = topic.partitions
        _, end = consumer.get_watermark_offsets(TopicPartition(self.members_topic, 0), 15)
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in streams]
            + [TopicPartition(self.members_topic, 0, end)]
        )
        return consumer

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                self._serve()
            except Exception:  # the broker went away, say: start over once it answers
                log.exception("stream ownership failed; this replica stops its streams, again in 1 s")
                self._apply(set(), [])
                self._closing.wait(1.0)
        try:  # leaving: the tombstone first, so the others open these cameras while they still run here
            self._producer.produce(self.members_topic, key=self.me.encode(), value=None)
            self._producer.flush(5)
        except Exception:
            log.exception("cluster: could not say this replica leaves; its session will lapse")
        finally:
            self._apply(set(), [])

    def _serve(self) -> None:
        """Read both topics from a fresh start: the streams from the beginning, who is a member anew."""
        self._ensure_topics()
        consumer = self._consumer()
        self._view, self._runs, self._runs_changed, self._ready = MemberView(), set(), True, False
        try:
            # Ready (may own streams) once every live member has had two heartbeats' time to be heard.
            ready_at = time.monotonic() + 2 * self.heartbeat_s
            next_beat = 0.0
            while not self._closing.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._beat()
                    next_beat = now + self.heartbeat_s
                self._producer.poll(0)
                # Sleep until a message, or the next moment something can change without one: a beat
                # due, a member's session lapsing, this replica getting ready or fenced.
                deadlines = [next_beat, self._view.next_lapse(now), self._acked + self.session_s, ready_at]
                wake = min((d for d in deadlines if d > now), default=now + 1.0)
                msg = consumer.poll(min(1.0, max(0.0, wake - time.monotonic()) + 0.001))
                now = time.monotonic()
                if msg is not None:
                    self._read(msg, now)
                if self._ready != self._may_own(now, ready_at):
                    self._ready = not self._ready
                    next_beat = 0.0  # say so at once
                self._decide(now)
        finally:
            consumer.close()

    def _beat(self) -> None:
        beat = Heartbeat(self._ready, self.session_s, self._incarnation)
        self._producer.produce(
            self.members_topic, key=self.me.encode(), value=beat.encode(), on_delivery=self._acked_by
        )

    def _acked_by(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self._acked = time.monotonic()
        else:
            log.warning("cluster: heartbeat not written: %s", err)

    def _read(self, msg: Message, now: float) -> None:
        if msg.error() is not None:
            log.warning("cluster topic: %s", msg.error())
            return
        key, value = msg.key(), msg.value()
        if key is None:
            return
        name = key.decode(errors="replace")
        if msg.topic() == self.members_topic:
            beat = Heartbeat.decode(value) if value is not None else None
            if value is not None and beat is None:
                log.warning("cluster: %s wrote a heartbeat this release cannot read; ignored", name)
                return
            if name == self.me and beat is not None and beat.incarnation != self._incarnation:
                if not self._warned_twin:
                    log.error(
                        "cluster: another process uses this replica id (%s): set RTVI_REPLICA_ID", self.me
                    )
                    self._warned_twin = True
                return
            self._view.hear(name, beat, now)
        else:
            (self._runs.add if value == RUN else self._runs.discard)(name)
            self._runs_changed = True

    def _read_age(self, now: float) -> float:
        """How long ago this replica read back its own heartbeat: how stale its view of the others is."""
        heard_me = self._view.heard_from(self.me)
        return math.inf if heard_me is None else now - heard_me

    def _may_own(self, now: float, ready_at: float) -> bool:
        """Ready: past the newcomer's wait and reading the members topic. A replica that has not read it
        for a session gives its cameras up (its heartbeats say not ready, so the others take them)."""
        if self._ready:
            return self._read_age(now) <= self.session_s
        return now >= ready_at and self._read_age(now) <= self.session_s / 2

    def _decide(self, now: float) -> None:
        """Run here exactly the streams this replica owns in its current view."""
        if now - self._acked > self.session_s or not self._ready:
            # Fenced (the others have dropped this replica by now) or not ready: no cameras here.
            members: list[str] = []
        elif self._read_age(now) > self.session_s / 2:
            return  # not reading the members topic for a moment: every other member looks lapsed
        else:
            members = self._view.members(now)
        self._view.forget_lapsed(now)
        if members == self._members and not self._runs_changed:
            return
        self._runs_changed = False
        wanted = {s for s in self._runs if owner_of(s, members) == self.me} if self.me in members else set()
        self._apply(wanted, members)

    def _apply(self, wanted: set[str], members: list[str]) -> None:
        with self._lock:
            if members != self._members:
                log.info("cluster: members %s", members)
            self._members = members
            starting, stopping = wanted - self._running, self._running - wanted
            self._running = set(wanted)
        for hook, streams in ((self._stop, stopping), (self._start, starting)):
            for stream_id in sorted(streams):
                try:
                    hook(stream_id)
                except Exception:  # one stream's failure (its registry read, say) is not the others'
                    log.exception("cluster: stream %s could not be started or stopped here", stream_id)
