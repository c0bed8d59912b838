"""Does an embedding put like with like? Nearest-neighbour agreement and its chance level.

For every vector, its nearest *other* vector by cosine; a labelling (stream, event type, ...)
"agrees" when both carry the same label. The rate over all vectors is compared with the rate a
neighbour drawn at random would give (:func:`chance_rate`).
"""

from __future__ import annotations

import numpy as np


def nearest_other(vecs: np.ndarray) -> np.ndarray:
    """[n] index of each row's nearest other row of ``vecs`` [n, d] by cosine (exact; n up to ~10^4)."""
    x = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def neighbour_rates(vecs: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of rows whose nearest other row has the same label, for each labelling in ``labels``."""
    nn = nearest_other(vecs)
    return {name: float((y[nn] == y).mean()) for name, y in labels.items()}


def chance_rate(labels: np.ndarray) -> float:
    """The same share when the neighbour is any other row at random: ``Σ n_c (n_c − 1) / (n (n − 1))``."""
    n = len(labels)
    _, counts = np.unique(labels, return_counts=True)
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))
