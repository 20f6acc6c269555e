"""The bundled model's match floor (core/models/bundled.MATCH_FLOOR, docs/alerts.md): per query, the
highest score of a scene that does not show it and the lowest of one that does, on the real photos the
tests and benchmarks use (scikit-image's, plus an empty grey scene), each in the alert bench's four camera
looks (bench/oracle_vlm.LOOKS), and scikit-image's other offline images as more scenes without a person.
The floor must lie between the two columns for every query.

Run: .venv/bin/python bench/match_floor.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media_factory import scene_photos  # noqa: E402

from bench.oracle_vlm import LOOKS, PEOPLE, look  # noqa: E402
from rtvi.core.models.bundled import MATCH_FLOOR, load_bundled  # noqa: E402
from rtvi.settings import Settings  # noqa: E402

# query -> the scenes that show it (every other scene does not)
QUERIES = {
    "a person": set(PEOPLE),
    "people": set(PEOPLE),
    "a cat": {"cat"},
    "an animal": {"cat"},
    "a drink": {"coffee"},
    "a spaceship": {"rocket"},
}
# scikit-image's other images that ship in the wheel: scenes without a person, a cat, a drink or a rocket
OTHERS = ("clock", "coins", "moon", "page", "brick", "grass", "gravel", "text", "colorwheel", "retina")


def scenes() -> dict[str, np.ndarray]:
    photos = {**scene_photos(), "empty": np.full((240, 320, 3), 128, dtype=np.uint8)}
    out = {f"{name}|{style}": look(img, style) for name, img in photos.items() for style in LOOKS}
    for name in OTHERS:
        img = np.asarray(getattr(data, name)())
        img = np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]
        out[f"{name}|plain"] = img
    return {k: np.asarray(Image.fromarray(v).convert("RGB").resize((320, 240))) for k, v in out.items()}


def main() -> None:
    model = load_bundled(Settings().model)
    shown = scenes()
    names = list(shown)
    vectors = model.embed_frames([[shown[n]] * 4 for n in names])
    texts = model.embed_texts(list(QUERIES))
    print(f"MATCH_FLOOR = {MATCH_FLOOR}")
    print("| query | highest score, scene without it | lowest score, scene with it | floor between |")
    print("|---|---|---|---|")
    for (query, wanted), text in zip(QUERIES.items(), texts, strict=True):
        scores = {n: float(v @ text) for n, v in zip(names, vectors, strict=True)}
        without = max((n for n in names if n.split("|")[0] not in wanted), key=scores.__getitem__)
        with_it = min((n for n in names if n.split("|")[0] in wanted), key=scores.__getitem__)
        ok = scores[without] < MATCH_FLOOR <= scores[with_it]
        print(
            f"| {query} | {scores[without]:.3f} ({without}) | {scores[with_it]:.3f} ({with_it}) "
            f"| {'yes' if ok else 'NO'} |"
        )


if __name__ == "__main__":
    main()
