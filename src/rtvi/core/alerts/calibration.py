"""When a score stands out: per stream and rule, from that stream's recent scores for that query
(docs/alerts.md explains the choice).

Raw cosine scores are not comparable across queries, cameras or models: "a person" may score 0.55 on
every chunk of a lobby camera and 0.15 on a parking lot at night, and a CLIP model's whole range is
narrower than the bundled model's. So a rule does not fire on a fixed cosine: it fires when a chunk's
score is far above what this camera usually scores for this query.

threshold = max(floor, min(median + max(k * sigma, MIN_MARGIN), P90 + margin))
    k = 2 + 6 * (1 - sensitivity), margin = MIN_MARGIN * (1 + 2 * (1 - sensitivity)),
    sigma = 1.4826 * MAD (median absolute deviation: the standard deviation of normal scores)

over the last `window` scores of this stream for this rule that did not stand out (a chunk above the
threshold joins the history only once `window // 4` did in a row: a lasting change of scene becomes the
new normal, a person who stays a few minutes keeps standing out):
- median + k sigma: robust, so the events themselves (up to half the window) do not raise the bar they
  are measured against, as a mean and standard deviation would;
- P90 + margin: a camera that alternates between scenes (day and night, lights on and off, a door
  open or shut) has two clusters of scores, whose MAD is half the gap between them: median + k sigma
  would then lie far above anything, and nothing would ever fire. A chunk above nine tenths of what
  the camera recently showed, by a margin, stands out too (events of up to a tenth of the window);
- MIN_MARGIN: a static scene scores the same on every chunk (MAD 0), where any flicker would otherwise
  stand out;
- floor: the rule's `min_score`, else the model's measured `match_floor` (the bundled model: 0.25), else
  ABSOLUTE_FLOOR: the score must also mean something on its own. A change between two ordinary scenes
  (the rocket, then an empty room) can stand out from a static camera's history; it does not pass the
  floor;
- warm-up: until the stream has `warmup` scores for the rule there is no distribution; a rule then fires
  only on its explicit `min_score`, and otherwise waits. A score that already passes the floor during
  the warm-up is held out like one that stood out: a person in view while the rule warms up does not
  become the camera's normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# A cosine below which no query is considered matched, for a model without a measured match_floor (the
# rule's min_score replaces either).
ABSOLUTE_FLOOR = 0.1
# The least margin above the median (cosine): the spread of a static scene is 0.
MIN_MARGIN = 0.05
_MAD_TO_SIGMA = 1.4826


def k_of(sensitivity: float) -> float:
    """How many robust standard deviations above the median: 8 at sensitivity 0, 5 at 0.5, 2 at 1."""
    return 2.0 + 6.0 * (1.0 - sensitivity)


def margin_of(sensitivity: float) -> float:
    """How far above the 90th percentile: 0.15 at sensitivity 0, 0.1 at 0.5, 0.05 at 1."""
    return MIN_MARGIN * (1.0 + 2.0 * (1.0 - sensitivity))


@dataclass(frozen=True, slots=True)
class Threshold:
    value: float | None  # None: still warming up, and the rule has no explicit floor to fire on
    median: float | None
    spread: float | None  # 1.4826 * MAD
    seen: int  # scores this stream has had for the rule (at most the window)
    floor: float  # the absolute floor (min_score, the model's match_floor, or ABSOLUTE_FLOOR)

    def passed(self, score: float) -> bool:
        return self.value is not None and score >= self.value

    def holds_out(self, score: float) -> bool:
        """Whether the score stays out of the history (ScoreHistory.add): it stood out, or it passes the
        floor while the rule warms up."""
        return score >= (self.floor if self.value is None else self.value)


@dataclass(slots=True)
class ScoreHistory:
    """The recent scores of one stream for one rule: a fixed ring (no growth over a year)."""

    window: int
    scores: npt.NDArray[np.float32] = field(init=False)
    count: int = 0
    run: int = 0  # consecutive scores that stood out

    def __post_init__(self) -> None:
        self.scores = np.zeros(self.window, dtype=np.float32)

    def add(self, score: float, stood_out: bool = False) -> None:
        """A score that stood out stays out of the history (an event does not raise its own bar, however
        long it lasts), until `window // 4` have in a row: then the scene is the new normal."""
        self.run = self.run + 1 if stood_out else 0
        if 0 < self.run <= self.window // 4:
            return
        self.scores[self.count % self.window] = score
        self.count += 1

    def recent(self) -> npt.NDArray[np.float32]:
        return self.scores[: min(self.count, self.window)]

    def in_order(self) -> npt.NDArray[np.float32]:
        """The recent scores, oldest first (what is saved: a restored ring overwrites the oldest next)."""
        if self.count <= self.window:
            return self.scores[: self.count].copy()
        return np.roll(self.scores, -(self.count % self.window))

    @classmethod
    def restored(cls, window: int, in_order: npt.NDArray[np.float32], run: int) -> ScoreHistory:
        """A history from saved scores (oldest first); the newest `window` of them when the window shrank."""
        history = cls(window)
        kept = np.asarray(in_order, dtype=np.float32)[-window:]
        history.scores[: len(kept)] = kept
        history.count, history.run = len(kept), run
        return history


def threshold(
    history: ScoreHistory,
    sensitivity: float,
    min_score: float | None,
    warmup: int,
    match_floor: float | None = None,
) -> Threshold:
    """The bar the next score of this stream must pass (computed before that score joins the history).
    match_floor: the model's (Embedder.match_floor)."""
    recent = history.recent()
    floor = min_score if min_score is not None else match_floor if match_floor is not None else ABSOLUTE_FLOOR
    if len(recent) < warmup:
        return Threshold(min_score, None, None, len(recent), floor)
    median = float(np.median(recent))
    spread = _MAD_TO_SIGMA * float(np.median(np.abs(recent - median)))
    robust = median + max(k_of(sensitivity) * spread, MIN_MARGIN)
    high = float(np.quantile(recent, 0.9)) + margin_of(sensitivity)
    value = max(floor, min(robust, high))
    return Threshold(value, median, spread, len(recent), floor)
