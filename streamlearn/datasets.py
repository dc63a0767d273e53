"""Datasets for the demo, tests and benchmarks. Nothing is downloaded at run time.

A dataset is a list of :class:`Item`: an event, its label (or ``None`` when the label
never arrives) and the event time at which the label arrives. :func:`arrival_order`
merges events and labels into the order the world would send them.

``cards`` (default) is a seeded card-transaction stream where fraud shows mostly in
per-card behaviour: bursts of transactions far above the card's usual amount. From
``drift_at`` on, fraudsters switch to many small "card testing" payments, a concept
drift. ``phishing`` is River's bundled Phishing dataset (no entities).

>>> items = cards(n=500, seed=1)
>>> len(items), items[0].event["entity"].startswith("card-")
(500, True)
>>> cards(n=50, seed=1) == cards(n=50, seed=1)
True
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("grocery", "fuel", "restaurant", "travel", "electronics", "online", "pharmacy", "fashion")


@dataclass(frozen=True)
class Item:
    event: dict[str, Any]
    label: Any | None  # None: the label never arrives
    label_time: int | None  # event-time ms at which the label arrives

    @property
    def feedback(self) -> dict[str, Any] | None:
        if self.label is None:
            return None
        return {"event_id": self.event["event_id"], "label": self.label, "label_time": self.label_time}


def cards(
    n: int = 50_000,
    *,
    seed: int = 7,
    n_cards: int = 2_000,
    fraud_rate: float = 0.02,
    drift_at: float | None = 0.6,
    label_delay_s: float = 1800.0,
    missing_labels: float = 0.05,
    start_ms: int = 1_700_000_000_000,
) -> list[Item]:
    rnd = random.Random(seed)
    typical = [math.exp(rnd.gauss(3.5, 0.9)) for _ in range(n_cards)]  # per-card usual amount
    fav = [rnd.sample(CATEGORIES, 3) for _ in range(n_cards)]
    activity = [rnd.paretovariate(1.5) for _ in range(n_cards)]
    total = sum(activity)
    weights = [a / total for a in activity]
    cum_weights = list(itertools.accumulate(weights))  # what choices() would rebuild per call: O(cards)
    drift_idx = int(n * drift_at) if drift_at is not None else n + 1
    t = float(start_ms)
    items: list[Item] = []
    burst: dict[int, int] = {}  # card -> fraudulent transactions left in its burst
    card_ids = list(range(n_cards))
    for i in range(n):
        t += rnd.expovariate(1 / 1500.0)  # ~1.5 s between transactions overall
        if burst and rnd.random() < 0.5:
            card = rnd.choice(list(burst))
        else:
            card = rnd.choices(card_ids, cum_weights=cum_weights)[0]
            if rnd.random() < fraud_rate / 4 and card not in burst:
                burst[card] = rnd.randint(2, 8)
        fraud = card in burst
        drifted = i >= drift_idx
        if fraud:
            burst[card] -= 1
            if burst[card] <= 0:
                del burst[card]
            if drifted:  # card testing: small amounts, online, any card
                amount = round(rnd.uniform(0.5, 5.0), 2)
                cat, channel = "online", "online"
            else:
                amount = round(typical[card] * rnd.uniform(4.0, 12.0), 2)
                cat = rnd.choice(("electronics", "travel", "online", "fashion"))
                channel = rnd.choice(("online", "pos"))
        else:
            amount = round(typical[card] * math.exp(rnd.gauss(0, 0.4)), 2)
            cat = rnd.choice(fav[card]) if rnd.random() < 0.8 else rnd.choice(CATEGORIES)
            channel = "online" if cat == "online" else rnd.choice(("pos", "pos", "pos", "online"))
        hour = int((t / 3_600_000) % 24)
        event = {
            "event_id": f"tx-{seed}-{i}",
            "entity": f"card-{card}",
            "event_time": int(t),
            "features": {"amount": amount, "category": cat, "channel": channel, "hour": hour},
        }
        if rnd.random() < missing_labels:
            items.append(Item(event, None, None))
        else:
            delay = rnd.lognormvariate(math.log(label_delay_s), 0.8) * 1000
            items.append(Item(event, fraud, int(t + delay)))
    return items


def phishing(n: int | None = None) -> list[Item]:
    """River's bundled Phishing dataset (1,250 rows), labels arriving 50 events later."""
    from river import datasets

    items = []
    t0 = 1_700_000_000_000
    for i, (x, y) in enumerate(datasets.Phishing()):
        if n is not None and i >= n:
            break
        ev = {"event_id": f"ph-{i}", "entity": f"row-{i}", "event_time": t0 + i * 1000,
              "features": {k: float(v) for k, v in x.items()}}
        items.append(Item(ev, bool(y), t0 + (i + 50) * 1000))
    return items


def drift(n: int = 12_000, *, position: int | None = 5_000, seed: int = 7, label_delay: int = 20,
          width: int = 50) -> list[Item]:
    """River's SEA concept (seeded) switching variant at ``position`` (``None``: no drift).

    Features stay identically distributed; only the concept changes, so a model that cannot
    unlearn (Gaussian NB, a plain Hoeffding tree) keeps the old boundary. Labels arrive
    ``label_delay`` events later.
    """
    from river.datasets import synth

    before = synth.SEA(variant=0, seed=seed)
    stream = before if position is None else synth.ConceptDriftStream(
        stream=before, drift_stream=synth.SEA(variant=3, seed=seed + 1), position=position, width=width, seed=seed)
    t0 = 1_700_000_000_000
    items = []
    for i, (x, y) in enumerate(stream.take(n)):
        ev = {"event_id": f"sea-{seed}-{i}", "entity": f"row-{i}", "event_time": t0 + i * 1000,
              "features": {f"x{k}": float(v) for k, v in x.items()}}
        items.append(Item(ev, bool(y), t0 + (i + label_delay) * 1000))
    return items


DATASETS = {"cards": cards, "phishing": phishing, "drift": drift}


def load(name: str, n: int | None = None, seed: int = 7) -> list[Item]:
    if name == "cards":
        return cards(n or 50_000, seed=seed)
    if name == "phishing":
        return phishing(n)
    if name == "drift":
        return drift(n or 12_000, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")


def arrival_order(items: list[Item]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events and labels merged by the event time at which each reaches the system.

    Yields ``("event", event)`` and ``("feedback", feedback)``; a label never precedes
    its own event.
    """
    import heapq

    pending: list[tuple[int, int, dict[str, Any]]] = []
    for seq, item in enumerate(items):
        t = item.event["event_time"]
        while pending and pending[0][0] <= t:
            yield "feedback", heapq.heappop(pending)[2]
        yield "event", item.event
        fb = item.feedback
        if fb is not None:
            heapq.heappush(pending, (max(fb["label_time"], t), seq, fb))
    while pending:
        yield "feedback", heapq.heappop(pending)[2]
