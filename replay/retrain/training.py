"""Point-in-time-correct training sets from the archive.

Features: the archived events are replayed in event-time order (partitions merged,
ties by partition and offset) through the feature view's own ``compute`` with per-entity
state in memory, so each example's features are exactly the view's features *as of its
event time*: computed from the state left by earlier events only, never from a later
value, and the same code online scoring runs. The whole history before a window feeds
the state, so the first example of a window is not starved of its entity's past.

Labels: joined afterwards, by event id, from the feedback topic (the first label of an
event in feedback order, as the live learner keeps it; later duplicates are ignored).
Features never read labels. For training, only labels known at the cutoff count
(``label_time <= cutoff``): a label from the future of the training horizon is not used.

Spilling: examples go to sparse chunk files (``scipy.sparse`` CSR in ``.npz``) with a
growing feature vocabulary, so a fit reads one chunk at a time, not the archive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from streamlearn.featurestore.definitions import FeatureView
from streamlearn.featurestore.errors import FeatureError
from streamlearn.replay.archive.reader import Archive, worker_labels


@dataclass
class Example:
    event_id: str
    entity: str
    event_time: int
    x: dict[str, float]
    y: Any = None
    label_time: int | None = None


def point_in_time(events: Iterable[dict[str, Any]], view: FeatureView) -> Iterator[tuple[dict[str, Any], dict]]:
    """(event, its features as of its event time) for events given in event-time order.

    A repeated event id is skipped (the live loop serves it its first vector and leaves
    the entity state alone), and so is an event the view cannot featurise (the live loop
    dead-letters it: ``feature_error``).
    """
    states: dict[str, Any] = {}
    seen: set[str] = set()
    for ev in events:
        if ev["event_id"] in seen:
            continue
        seen.add(ev["event_id"])
        try:
            x, states[ev["entity"]] = view.compute(ev, states.get(ev["entity"]))
        except FeatureError:
            continue
        yield ev, x


def label_index(archive: Archive, task: Any = None, refused: Counter | None = None) -> dict[str, tuple[Any, int]]:
    """event id -> (label, label_time): the first label per event in feedback offset order.

    With ``task``, only labels the worker learns: its own check refuses (dead-letters) e.g. a
    12.5 on a binary task, which the feedback topic still holds; those are counted in ``refused``."""
    out: dict[str, tuple[Any, int]] = {}
    refused = Counter() if refused is None else refused
    for tp in archive.partitions("feedback"):
        pairs = archive.decoded(archive.partition_records("feedback", *tp))
        for _, fb in (pairs if task is None else worker_labels(pairs, task, refused)):
            out.setdefault(fb["event_id"], (fb["label"], fb["label_time"]))
    return out


def examples(archive: Archive, view: FeatureView, labels: dict[str, tuple[Any, int]],
             start: int | None = None, end: int | None = None) -> Iterator[Example]:
    """Examples for events with event time in [start, end); earlier events only build state."""
    events = (ev for _, ev in archive.decoded(archive.by_event_time("event", None, end)))
    for ev, x in point_in_time(events, view):
        if start is not None and ev["event_time"] < start:
            continue
        y, lt = labels.get(ev["event_id"], (None, None))
        yield Example(ev["event_id"], ev["entity"], ev["event_time"], x, y, lt)


@dataclass
class Vocabulary:
    """Feature name -> column; append-only so earlier chunks stay valid."""

    index: dict[str, int] = field(default_factory=dict)

    def columns(self, x: dict[str, float]) -> tuple[list[int], list[float]]:
        cols, vals = [], []
        for k, v in x.items():
            i = self.index.get(k)
            if i is None:
                i = self.index[k] = len(self.index)
            cols.append(i)
            vals.append(v)
        return cols, vals

    @property
    def names(self) -> list[str]:
        return list(self.index)


class ChunkSpill:
    """Labeled examples on disk in chunks of ``chunk_size`` rows."""

    def __init__(self, directory: Path, vocab: Vocabulary, chunk_size: int = 5000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vocab = vocab
        self.chunk_size = chunk_size
        self.paths: list[Path] = []
        self.rows = 0
        self.label_counts: dict[Any, int] = {}
        self._clear()

    def _clear(self) -> None:
        self._data: list[float] = []
        self._indices: list[int] = []
        self._indptr: list[int] = [0]
        self._y: list[Any] = []
        self._t: list[int] = []

    def add(self, ex: Example) -> None:
        cols, vals = self.vocab.columns(ex.x)
        self._indices += cols
        self._data += vals
        self._indptr.append(len(self._indices))
        self._y.append(ex.y)
        self._t.append(ex.event_time)
        self.label_counts[ex.y] = self.label_counts.get(ex.y, 0) + 1
        self.rows += 1
        if len(self._y) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._y:
            return
        path = self.dir / f"chunk-{len(self.paths):05d}.npz"
        y = np.empty(len(self._y), dtype=object)
        y[:] = self._y
        np.savez(path, data=np.asarray(self._data, dtype=np.float64), indices=np.asarray(self._indices, np.int64),
                 indptr=np.asarray(self._indptr, np.int64), y=y, t=np.asarray(self._t, np.int64))
        self.paths.append(path)
        self._clear()

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(dense X over the final vocabulary, y, event times) per chunk, in order."""
        self.flush()
        n_features = len(self.vocab.index)
        for path in self.paths:
            with np.load(path, allow_pickle=True) as z:  # our own temp file: y holds Python labels
                n = len(z["y"])
                m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(n, n_features))
                yield m.toarray(), z["y"], z["t"]
