"""AlertEngine: text alert rules on the embedding stream (docs/alerts.md).

A ChunkListener. Each live chunk's embedding is scored against every active rule on its stream in one
matrix product, on the event loop after the chunk reached its readers (microseconds: a few rules x one
vector, and a median over at most RTVI_ALERT_CALIBRATION_WINDOW scores each). A score that stands out
(calibration.py) for `min_consecutive` chunks, outside the rule's cooldown, is a candidate; the work
that takes time runs in a task: the VLM check (`verify`), storing the incident and its thumbnail,
delivering it. Every decision is kept (the last DECISIONS_KEPT per rule, in memory) with its score,
threshold and the VLM's answer, so a user can see why a rule fired or did not.

Rules live in the registry's database (shared by replicas on PostgreSQL) and are re-read every
RTVI_ALERT_RULES_REFRESH_SEC. A camera's chunks exist only on the replica that decodes it, so each chunk
is scored, and each incident raised, once. Incidents are kept there too: while SSE readers are
connected, a replica also reads the incidents other replicas raised (FEED_POLL_S) and hands them on, so
a reader behind a load balancer sees every camera's incidents. Calibration state (each rule's recent
scores per stream, and its cooldown) is kept in memory and saved to the registry every
RTVI_ALERT_CALIBRATION_SAVE_SEC; when a stream's chunks start coming here (a restart, a replica taking
over the camera), its saved state is read first, so the rules go on from the camera's recent scores
instead of warming up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from rtvi.core.alerts.calibration import ScoreHistory, Threshold, threshold
from rtvi.core.alerts.delivery import Deliveries
from rtvi.core.alerts.rules import Rule, RuleFields, RuleSpec
from rtvi.core.alerts.store import AlertStore, SavedCalibration
from rtvi.core.alerts.verify import Verdict, Verifier
from rtvi.core.bus.incidents import AnalyticsModule, Place, fill_place
from rtvi.core.bus.messages import chunk_context, vision_llm_envelope
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.bus.schema import ext_pb2
from rtvi.core.index.thumbnails import ThumbnailStore, thumbnail_key
from rtvi.core.index.writer import thumbnail_jpeg
from rtvi.core.models.common import l2_normalize
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.events import ChunkDone
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import InvalidParameters, NotFound, Unavailable
from rtvi.settings import AlertSettings

log = logging.getLogger(__name__)

# A chunk's output -> its vector (None: the chunk has none to score).
VectorOf = Callable[[Any], "npt.NDArray[np.float32] | None"]
# A query (text, image data: URI) -> its vector in the served model's space.
QueryVector = Callable[[str | None, str | None], Awaitable["npt.NDArray[np.float32]"]]

DECISIONS_KEPT = 500  # per rule
# A stream whose chunks stopped coming here for this long may have been decoded elsewhere meanwhile (a
# take-over and back): its calibration is read again from the registry, the newer of the two kept.
RELOAD_AFTER_S = 120.0
SUBSCRIBER_QUEUE = 64  # incidents waiting for one SSE reader; beyond it the oldest go
# While SSE readers are connected, the registry is read this often for incidents other replicas raised,
# looking back FEED_LOOKBACK_S before the newest seen (another replica's clock, or its write, may lag);
# the ids of the last FED_KEPT incidents handed on keep any from going out twice.
FEED_POLL_S = 1.0
FEED_LOOKBACK_S = 10.0
FEED_BATCH = 500
FED_KEPT = 4096
THUMBNAIL_OWNER = "alert-incidents"  # the thumbnail store's owner of every incident's picture
INCIDENT_PATH = "/v1/alerts/incidents/{id}/thumbnail"


@dataclass(slots=True)
class _PairState:
    """One rule on one stream."""

    history: ScoreHistory
    query_digest: str  # the rule's query vector it was calibrated for: a new query starts afresh
    streak: int = 0
    quiet_until: float = float("-inf")  # chunks starting before this are in the cooldown
    verifying: bool = False
    updated_at: float = 0.0  # Unix time of its last score
    unsaved: bool = False  # changed since it was last saved


@dataclass(slots=True)
class _RuleStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)  # "webhook:failed", ...
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=DECISIONS_KEPT))


def _digest(vector: npt.NDArray[np.float32] | None) -> str:
    return "" if vector is None else hashlib.sha1(vector.tobytes()).hexdigest()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertEngine:
    def __init__(
        self,
        settings: AlertSettings,
        store: AlertStore,
        thumbnails: ThumbnailStore,
        metrics: Metrics,
        publisher: Callable[[], MessagePublisher | None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.thumbnails = thumbnails
        self.metrics = metrics
        self.verifier = Verifier(settings)
        self.deliveries = Deliveries(settings, metrics, publisher, self._delivered)
        self._model: ModelInfo | None = None
        self._vector_of: VectorOf | None = None
        self._query_vector: QueryVector | None = None
        self._match_floor: float | None = None  # the model's (calibration.threshold)
        self._rules: dict[str, Rule] = {}
        self._digests: dict[str, str] = {}
        self._active: list[Rule] = []  # unpaused, with a vector in the served model's space
        self._matrix = np.zeros((0, 0), dtype=np.float32)  # their vectors, one row each
        self._by_stream: dict[str, npt.NDArray[np.intp]] = {}  # stream -> rows of rules that apply
        self._pairs: dict[tuple[str, str], _PairState] = {}
        self._last_chunk: dict[str, float] = {}  # stream -> when its last chunk came here (monotonic)
        self._loading: dict[str, list[ChunkDone]] = {}  # stream -> its chunks held while its state loads
        self._saved_at = time.monotonic()
        self._stats: dict[str, _RuleStats] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._fed: OrderedDict[str, None] = OrderedDict()  # ids of the incidents readers were handed
        self._follower: asyncio.Task[None] | None = None  # reads other replicas' incidents for readers
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._version: tuple[int, float] = (-1, 0.0)  # the store's, when the rules were last read

    # --- lifecycle --------------------------------------------------------------------------------
    async def open(
        self, model: ModelInfo, vector_of: VectorOf, query_vector: QueryVector, match_floor: float | None
    ) -> None:
        """Score every live chunk from now on (the model stage calls this once it has loaded)."""
        self._model, self._vector_of, self._query_vector = model, vector_of, query_vector
        self._match_floor = match_floor
        try:
            await self.reload()
        except Exception:  # the model serves regardless; the refresh tries again
            log.exception("alert rules: reading the rules failed")
        self._refresher = asyncio.create_task(self._refresh(), name="alert-rules")
        log.info("alert rules: %d, %d active", len(self._rules), len(self._active))

    async def close(self) -> None:
        for task in (self._refresher, self._follower):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.settings.alert_calibration_save_s > 0:
            await self._save_calibration()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.deliveries.close()
        await self.verifier.close()

    async def _refresh(self) -> None:
        save_every = self.settings.alert_calibration_save_s
        while True:
            await asyncio.sleep(self.settings.alert_rules_refresh_s)
            try:
                if await asyncio.to_thread(self.store.version) != self._version:
                    await self.reload()
            except Exception:
                log.exception("alert rules: re-reading the rules failed")
            if save_every > 0 and time.monotonic() - self._saved_at >= save_every:
                await self._save_calibration()

    # --- calibration in the registry --------------------------------------------------------------
    async def _save_calibration(self) -> None:
        self._saved_at = now = time.monotonic()
        unsaved = [(key, state) for key, state in self._pairs.items() if state.unsaved]
        for stream_id in [s for s, t in self._last_chunk.items() if now - t > RELOAD_AFTER_S]:
            del self._last_chunk[stream_id]  # read again if it comes back: bounded by the streams here
        if not unsaved:
            return
        rows = [
            SavedCalibration(
                rule_id, stream_id, st.query_digest, st.history.in_order(), st.history.run, st.quiet_until,
                st.updated_at,
            )
            for (rule_id, stream_id), st in unsaved
        ]  # fmt: skip
        for _, state in unsaved:
            state.unsaved = False
        try:
            await asyncio.to_thread(self.store.save_calibration, rows)
        except Exception:
            log.exception("alert calibration: saving %d states failed; next time", len(rows))
            for _, state in unsaved:
                state.unsaved = True

    def _held_for_loading(self, event: ChunkDone) -> bool:
        """Whether the chunk waits for its stream's saved calibration: the stream's first chunk here (after
        a start, a take-over, or a long pause) starts the reading, and chunks that come meanwhile queue
        behind it, in order."""
        if self.settings.alert_calibration_save_s <= 0:
            return False
        stream_id = event.asset.id
        held = self._loading.get(stream_id)
        if held is not None:
            held.append(event)
            return True
        now = time.monotonic()
        last, self._last_chunk[stream_id] = self._last_chunk.get(stream_id), now
        if last is not None and now - last <= RELOAD_AFTER_S:
            return False
        self._loading[stream_id] = [event]
        task = asyncio.create_task(self._load_calibration(stream_id), name=f"alert-calibration-{stream_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _load_calibration(self, stream_id: str) -> None:
        try:
            saved = await asyncio.to_thread(self.store.calibration, stream_id)
        except Exception:
            log.exception("alert calibration of stream %s: reading it failed; it warms up again", stream_id)
            saved = []
        try:
            window = self.settings.alert_calibration_window
            for c in saved:
                here = self._pairs.get((c.rule_id, stream_id))
                newer_here = here is not None and here.updated_at >= c.updated_at
                if self._digests.get(c.rule_id) != c.query_digest or newer_here:
                    continue  # another query now, or what this replica holds is newer
                self._pairs[(c.rule_id, stream_id)] = _PairState(
                    ScoreHistory.restored(window, c.scores, c.run), c.query_digest,
                    quiet_until=c.quiet_until, updated_at=c.updated_at,
                )  # fmt: skip
        finally:
            for event in self._loading.pop(stream_id, []):
                self._score(event)

    async def reload(self) -> None:
        """Read the rules again (another replica may have changed them); a rule whose vector was made by
        another model is embedded again with this one."""
        version = await asyncio.to_thread(self.store.version)
        rules = await asyncio.to_thread(self.store.rules)
        model = self._model
        for i, rule in enumerate(rules):
            if model is not None and rule.vector_model != model.id and self._query_vector is not None:
                try:
                    vector = await self._embed(rule.spec)
                except Exception:  # left inactive (its vector is another model's); the others go on
                    log.exception("alert rule %s: embedding its query with %s failed", rule.id, model.id)
                    continue
                rules[i] = replace(rule, vector=vector, vector_model=model.id)
                # Only the vector: a change made meanwhile (another replica's PATCH) is kept.
                await asyncio.to_thread(self.store.set_vector, rule.id, vector, model.id)
        self._install(rules)
        self._version = version
        await self.deliveries.close_unused_mqtt(rules)

    def _install(self, rules: list[Rule]) -> None:
        model = self._model
        self._rules = {r.id: r for r in rules}
        # Which query each rule's calibration belongs to: once per reading of the rules, not per chunk.
        self._digests = {r.id: _digest(r.vector) for r in rules}
        self._active = [
            r
            for r in rules
            if not r.spec.paused and r.vector is not None and model is not None and r.vector_model == model.id
        ]
        dim = self._active[0].vector.shape[0] if self._active and self._active[0].vector is not None else 0
        self._matrix = (
            np.stack([r.vector for r in self._active if r.vector is not None]).astype(np.float32)
            if self._active
            else np.zeros((0, dim), dtype=np.float32)
        )
        self._by_stream = {}
        live = set(self._rules)
        for key in [k for k in self._pairs if k[0] not in live or not self._rules[k[0]].applies_to(k[1])]:
            del self._pairs[key]
        for rule_id in [r for r in self._stats if r not in live]:
            del self._stats[rule_id]

    def _rows_for(self, stream_id: str) -> npt.NDArray[np.intp]:
        rows = self._by_stream.get(stream_id)
        if rows is None:
            rows = np.array([i for i, r in enumerate(self._active) if r.applies_to(stream_id)], dtype=np.intp)
            self._by_stream[stream_id] = rows
        return rows

    # --- ChunkListener ----------------------------------------------------------------------------
    def keeps_live_jobs(self, stream_id: str) -> bool:
        return bool(len(self._rows_for(stream_id)))  # an active rule watches this stream

    def chunk_done(self, event: ChunkDone) -> None:
        if not event.live or not self._active or self._vector_of is None:
            return
        if not len(self._rows_for(event.asset.id)) or self._held_for_loading(event):
            return
        self._score(event)

    def _score(self, event: ChunkDone) -> None:
        rows = self._rows_for(event.asset.id)
        if not len(rows) or self._vector_of is None:
            return  # the rules changed while the chunk waited
        vector = self._vector_of(event.result.output)
        if vector is None:
            return
        scores = self._matrix[rows] @ np.asarray(vector, dtype=np.float32)
        for row, score in zip(rows, scores, strict=True):
            self._decide(self._active[row], event, float(score))

    def _decide(self, rule: Rule, event: ChunkDone, score: float) -> None:
        spec, r, stream_id = rule.spec, event.result, event.asset.id
        s = self.settings
        state = self._pairs.get((rule.id, stream_id))
        digest = self._digests[rule.id]
        if state is None or state.query_digest != digest:
            state = self._pairs[(rule.id, stream_id)] = _PairState(
                ScoreHistory(s.alert_calibration_window), digest
            )
        bar = threshold(
            state.history, spec.sensitivity, spec.min_score, s.alert_warmup_chunks, self._match_floor
        )
        state.history.add(score, stood_out=bar.holds_out(score))
        state.updated_at, state.unsaved = time.time(), True
        if bar.value is None:
            outcome, state.streak = "warming-up", 0
        elif score < bar.value:
            outcome, state.streak = "below", 0
        else:
            state.streak += 1
            if state.streak < spec.min_consecutive:
                outcome = "candidate"
            elif r.start_s < state.quiet_until or state.verifying:
                outcome = "cooldown"
            else:
                outcome = "verifying" if spec.verify else "fired"
                state.quiet_until = r.end_s + spec.cooldown_s
                state.verifying = bool(spec.verify)
                task = asyncio.create_task(self._raise(rule, event, score, bar, state))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self._record(rule, event, score, bar, outcome)

    def _record(
        self,
        rule: Rule,
        event: ChunkDone,
        score: float,
        bar: Threshold,
        outcome: str,
        verdict: Verdict | None = None,
    ) -> None:
        self.metrics.alert_decisions.labels(outcome).inc()
        if rule.id not in self._rules:
            return  # deleted while its VLM check ran
        stats = self._stats.setdefault(rule.id, _RuleStats())
        stats.outcomes[outcome] += 1
        r = event.result
        stats.decisions.append(
            {
                "stream_id": event.asset.id,
                "chunk_idx": r.index,
                "start_time": event.clock.time(r.start_s),
                "end_time": event.clock.time(r.end_s),
                "score": round(score, 4),
                "threshold": None if bar.value is None else round(bar.value, 4),
                "median": None if bar.median is None else round(bar.median, 4),
                "spread": None if bar.spread is None else round(bar.spread, 4),
                "floor": round(bar.floor, 4),
                "outcome": outcome,
                "verification": None if verdict is None else verdict.public(rule.spec.verify or ""),
                "at": time.time(),
            }
        )

    # --- raising an incident ----------------------------------------------------------------------
    async def _raise(
        self, rule: Rule, event: ChunkDone, score: float, bar: Threshold, state: _PairState
    ) -> None:
        verdict: Verdict | None = None
        try:
            if rule.spec.verify:
                frames = event.frames or (
                    (event.result.thumbnail,) if event.result.thumbnail is not None else ()
                )
                verdict = await self.verifier.verify(rule.spec.verify, frames)
                self.metrics.alert_vlm_calls.labels(verdict.decision).inc()
                if verdict.decision != "yes":
                    if verdict.decision == "error":  # no answer is no reason to stay quiet: retry next time
                        state.quiet_until = event.result.end_s
                    self._record(
                        rule,
                        event,
                        score,
                        bar,
                        "rejected" if verdict.decision == "no" else "verify-failed",
                        verdict,
                    )
                    return
                current = self._rules.get(rule.id)
                if current is None or not current.applies_to(event.asset.id):
                    return  # deleted, paused or narrowed while the VLM answered
                rule = current  # its actions as they are now
                self._record(rule, event, score, bar, "fired", verdict)
            await self._incident(rule, event, score, bar, verdict)
        except Exception:
            log.exception("rule %s: raising an incident failed", rule.id)
        finally:
            state.verifying = False

    async def _incident(
        self, rule: Rule, event: ChunkDone, score: float, bar: Threshold, verdict: Verdict | None
    ) -> None:
        r, asset, now = event.result, event.asset, time.time()
        incident_id = uuid.uuid4().hex
        base = self.settings.alert_public_url.rstrip("/")
        incident = {
            "id": incident_id,
            "rule_id": rule.id,
            "rule_name": rule.spec.name,
            "query": rule.spec.query,
            "stream_id": asset.id,
            "stream_name": asset.sensor_name or asset.filename,
            "chunk_idx": r.index,
            "request_id": event.request_id,
            "start_time": event.clock.time(r.start_s),
            "end_time": event.clock.time(r.end_s),
            "score": round(score, 4),
            "threshold": None if bar.value is None else round(bar.value, 4),
            "verification": None if verdict is None else verdict.public(rule.spec.verify or ""),
            "thumbnail_url": None,
            "created_at": _iso(now),
            "created_at_unix": now,
        }
        width, height = asset.meta.get("width"), asset.meta.get("height")
        aspect = width / height if isinstance(width, int) and isinstance(height, int) and height > 0 else None
        jpeg = (
            await asyncio.to_thread(thumbnail_jpeg, r.thumbnail, aspect) if r.thumbnail is not None else None
        )
        if jpeg is not None:
            incident["thumbnail_url"] = base + INCIDENT_PATH.format(id=incident_id)
        await asyncio.to_thread(self._keep, incident, jpeg)
        self._hand_on(incident)
        message, key = self._nv_incident(rule, event, incident)
        body = json.dumps(incident, separators=(",", ":")).encode()
        self.deliveries.deliver(rule, body, message, key, r.end_s)

    def _keep(self, incident: dict[str, Any], jpeg: bytes | None) -> None:
        if jpeg is not None:
            self.thumbnails.put(thumbnail_key(THUMBNAIL_OWNER, incident["id"]), jpeg)
        removed = self.store.add_incident(incident)
        if removed:
            self.thumbnails.delete([thumbnail_key(THUMBNAIL_OWNER, i) for i in removed])

    def _nv_incident(
        self, rule: Rule, event: ChunkDone, incident: dict[str, Any]
    ) -> tuple[ext_pb2.Incident, bytes]:
        """The incident as nv.Incident (spec §6.4), as the VLM service's alert prompts raise them: same
        envelope fields, its `info` saying which rule, score and verification."""
        model = self._model
        assert model is not None
        r, asset, spec = event.result, event.asset, rule.spec
        ctx = chunk_context(asset, event.request_id, model, model.id, r, 0.0)
        vision, _ = vision_llm_envelope(ctx)
        msg = ext_pb2.Incident(sensorId=ctx.sensor_key, category=spec.name, isAnomaly=True)
        msg.timestamp.CopyFrom(vision.timestamp)
        msg.end.CopyFrom(vision.end)
        msg.frameIds.extend([vision.startFrameId, vision.endFrameId])
        msg.objectIds.append(asset.id)
        module = AnalyticsModule.of(self.settings)
        fill_place(msg, Place.of(asset.meta, self.settings), module, model.id)
        msg.analyticsModule.info.update(
            {"requestId": event.request_id, "chunkIdx": str(r.index), "streamType": "live"}
        )
        msg.llm.info.update({"modelId": model.id, "modelApiType": model.api_type})
        verification = incident["verification"]
        msg.info.update(
            {
                "incidentId": incident["id"],
                "ruleId": rule.id,
                "ruleName": spec.name,
                "query": spec.query or "",
                "score": str(incident["score"]),
                "threshold": str(incident["threshold"]),
                "requestId": event.request_id,
                "chunkIdx": str(r.index),
                "streamId": asset.id,
                "sensorId": ctx.sensor_key,
                "alertCategory": spec.name,
                "verdict": "confirmed" if verification else "embedding",
                "priority": module.priority,
                "incident_detected": "true",
                "thumbnailUrl": incident["thumbnail_url"] or "",
            }
        )
        if verification:
            msg.info.update({"prompt": verification["prompt"], "triggerPhrase": verification["answer"][:500]})
        return msg, f"{rule.id}:{event.request_id}:{r.index}".encode()

    def _delivered(self, rule_id: str, kind: str, outcome: str) -> None:
        if rule_id in self._rules:  # a rule deleted meanwhile keeps no stats
            self._stats.setdefault(rule_id, _RuleStats()).deliveries[f"{kind}:{outcome}"] += 1

    # --- rules (the routes) -----------------------------------------------------------------------
    def _ready(self) -> None:
        if self._query_vector is None or self._model is None:
            raise Unavailable("The model is still loading; rules can be created once it has loaded")

    async def _embed(self, spec: RuleSpec) -> npt.NDArray[np.float32]:
        assert self._query_vector is not None
        parts = []
        if spec.query:
            parts.append(await self._query_vector(spec.query, None))
        if spec.image:
            parts.append(await self._query_vector(None, spec.image))
        return (
            l2_normalize(np.mean(np.stack(parts), axis=0))[0]
            if len(parts) > 1
            else parts[0].astype(np.float32)
        )

    async def _checked(self, rule: Rule) -> None:
        if rule.spec.verify and not self.verifier.configured:
            raise InvalidParameters("verify needs a VLM: set RTVI_ALERT_VLM_URL (any OpenAI-compatible /v1)")
        why = await self.deliveries.check(rule)
        if why:
            raise InvalidParameters(why)

    async def create(self, spec: RuleSpec) -> Rule:
        self._ready()
        assert self._model is not None
        vector = await self._embed(spec)
        probe = Rule("", spec, vector, self._model.id, 0.0, 0.0)
        await self._checked(probe)
        rule = await asyncio.to_thread(self.store.add_rule, spec, vector, self._model.id)
        await self.reload()
        return rule

    async def update(self, rule_id: str, patch: RuleFields) -> Rule:
        old = await asyncio.to_thread(self.store.rule, rule_id)  # not this replica's copy: it may lag
        if old is None:
            raise NotFound(f"No alert rule with id {rule_id}")
        try:
            spec = old.spec.patched(patch)
        except ValidationError as exc:  # its first problem, without the input (it may hold a secret)
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"]) or "rule"
            raise InvalidParameters(f"Invalid rule: {where}: {err['msg']}") from None
        vector, vector_model = old.vector, old.vector_model
        if not spec.watches(old.spec):
            self._ready()
            assert self._model is not None
            vector, vector_model = await self._embed(spec), self._model.id
        rule = Rule(rule_id, spec, vector, vector_model, old.created_at, time.time())
        await self._checked(rule)
        if await asyncio.to_thread(self.store.replace_rule, rule) is None:
            raise NotFound(f"No alert rule with id {rule_id}")
        await self.reload()
        return rule

    async def delete(self, rule_id: str) -> None:
        if not await asyncio.to_thread(self.store.delete_rule, rule_id):
            raise NotFound(f"No alert rule with id {rule_id}")
        await self.reload()

    def stats(self, rule_id: str) -> dict[str, Any]:
        """What this replica decided for the rule since it started (decisions are per replica)."""
        stats = self._stats.get(rule_id) or _RuleStats()
        return {"decisions": dict(stats.outcomes), "deliveries": dict(stats.deliveries)}

    def decisions(self, rule_id: str, stream_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stats = self._stats.get(rule_id)
        if stats is None:
            return []
        kept = [d for d in reversed(stats.decisions) if stream_id is None or d["stream_id"] == stream_id]
        return kept[:limit]

    # --- incidents --------------------------------------------------------------------------------
    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Incidents as they are raised, on this replica or (within about FEED_POLL_S) on another one
        sharing the registry, until the reader leaves."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._follow_registry(), name="alert-incident-feed")
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def _hand_on(self, incident: dict[str, Any]) -> None:
        """Give an incident to every SSE reader, once."""
        if incident["id"] in self._fed:
            return
        self._fed[incident["id"]] = None
        if len(self._fed) > FED_KEPT:
            self._fed.popitem(last=False)
        for queue in list(self._subscribers):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(incident)

    async def _follow_registry(self) -> None:
        """While readers are connected: the incidents other replicas raised, oldest first. Those raised
        before the first reader came are only noted (a reader gets incidents from when it connects).
        It ends when the last reader leaves, primed or not (the registry may be down meanwhile)."""
        newest, primed = time.time(), False
        while self._subscribers:
            try:
                found = await asyncio.to_thread(
                    self.store.incidents, limit=FEED_BATCH, after=newest - FEED_LOOKBACK_S
                )
            except Exception:  # not primed yet: a later read notes the incidents before the reader
                log.exception("alert incident feed: reading the registry failed; again in %s s", FEED_POLL_S)
                await asyncio.sleep(FEED_POLL_S)
                continue
            for incident in reversed(found):  # newest first -> oldest first
                newest = max(newest, float(incident.get("created_at_unix") or 0.0))
                if primed:
                    self._hand_on(incident)
                else:
                    self._fed.setdefault(incident["id"], None)
            primed = True
            await asyncio.sleep(FEED_POLL_S)

    def thumbnail(self, incident_id: str) -> bytes | None:
        with contextlib.suppress(ValueError):  # not an id of ours: no such thumbnail
            return self.thumbnails.get(thumbnail_key(THUMBNAIL_OWNER, incident_id))
        return None
