"""The segments example's code: a feature function, two multiclass River models, a demo stream.

Referenced from streamlearn.toml as ``project:<name>`` (streamlearn puts this folder on sys.path).
"""

from __future__ import annotations

import math
import random
from typing import Any

from river import datasets, linear_model, optim, preprocessing, tree

from streamlearn.datasets import Item

CLASSES = ("brickface", "cement", "foliage", "grass", "path", "sky", "window")


# ------------------------------------------------------------------ feature function
def chromaticity(event: dict[str, Any], state: None) -> dict[str, float]:
    """Each colour's share of the region's total: lighting changes brightness, not shares."""
    f = event["features"]
    r, g, b = (float(f.get(k) or 0.0) for k in ("rawred-mean", "rawgreen-mean", "rawblue-mean"))
    total = r + g + b
    if total <= 0:
        return {"chroma_r": 1 / 3, "chroma_g": 1 / 3, "chroma_b": 1 / 3}
    return {"chroma_r": r / total, "chroma_g": g / total, "chroma_b": b / total}


# ------------------------------------------------------------------ model factories
def softmax(lr: float = 0.05, l2: float = 0.0) -> Any:
    """The champion: scaled features into a multinomial logistic regression (one model, a
    probability for every class)."""
    return preprocessing.StandardScaler() | linear_model.SoftmaxRegression(optimizer=optim.SGD(lr), l2=l2)


def tree_model(grace_period: int = 50, delta: float = 1e-5) -> Any:
    """The challenger a drift alarm starts: an adaptive Hoeffding tree with naive-Bayes leaves."""
    return tree.HoeffdingAdaptiveTreeClassifier(grace_period=grace_period, delta=delta,
                                                leaf_prediction="nba", seed=42)


# ------------------------------------------------------------------ the demo stream
def generate(n: int = 2310, seed: int = 7, n_cameras: int = 12) -> list[Item]:
    """ImageSegments rows in a seeded order (another shuffled pass if ``n`` > 2,310), ~5 s
    apart, each from one of ``n_cameras`` cameras. A camera watches a scene of two or three
    surfaces and sends 80% of its regions from them; a region's label arrives 30 s to
    ~15 min later (an annotator's queue)."""
    rng = random.Random(seed)
    rows = list(datasets.ImageSegments())
    scenes = [rng.sample(CLASSES, rng.choice((2, 3))) for _ in range(n_cameras)]
    watching = {c: [k for k, s in enumerate(scenes) if c in s] or list(range(n_cameras)) for c in CLASSES}
    order: list[int] = []
    while len(order) < n:
        order += rng.sample(range(len(rows)), len(rows))
    t = 1_772_409_600_000.0  # 2026-03-02T00:00:00Z
    items: list[Item] = []
    for i, r in enumerate(order[:n]):
        x, y = rows[r]
        camera = rng.choice(watching[y]) if rng.random() < 0.8 else rng.randrange(n_cameras)
        t += rng.expovariate(1 / 5000.0)
        event = {"event_id": f"seg-{seed}-{i}", "entity": f"camera-{camera}", "event_time": int(t),
                 "features": {k: float(v) for k, v in x.items()}}
        delay_ms = int(1000 * (30 + rng.lognormvariate(math.log(180), 0.7)))
        items.append(Item(event, y, int(t) + delay_ms))
    return items
