"""The card-fraud example's code: only its demo stream (the features and model are declared)."""

from __future__ import annotations

from streamlearn import datasets
from streamlearn.datasets import Item


def generate(n: int = 5000, seed: int = 7) -> list[Item]:
    """The built-in card stream: per-card habits, fraud bursts, a concept drift at 60%
    (card testing: many small online payments) and labels ~30 minutes after the event."""
    return datasets.cards(n, seed=seed)
