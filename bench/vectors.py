"""Synthetic embeddings for the index benches and tests: unit vectors in clusters, like chunks of many
scenes (each scene's chunks near one another), not uniform noise (where no neighbour is meaningfully
nearer than another and every index looks bad).

Each vector is a scene's centre plus Gaussian noise; with the default noise a chunk's cosine to its
centre is about 0.8 and to its 10th nearest neighbour about 0.7 at a thousand chunks per scene. Blocks are
reproducible from (seed, block), so a bench can write tens of millions of vectors to disk and compute the
exact neighbours again block by block without ever holding them all.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

NOISE = 0.75


def centres(count: int, dim: int, seed: int = 12345) -> npt.NDArray[np.float32]:
    c = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c


def clustered(n: int, scenes: npt.NDArray[np.float32], seed: int) -> npt.NDArray[np.float32]:
    """`n` unit vectors, each near one of `scenes` (chosen at random)."""
    rng = np.random.default_rng(seed)
    dim = scenes.shape[1]
    v = scenes[rng.integers(0, len(scenes), n)]
    v += rng.standard_normal((n, dim), dtype=np.float32) * np.float32(NOISE / np.sqrt(dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v
