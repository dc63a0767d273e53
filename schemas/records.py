"""Typed views of the records that code passes around (the ``.avsc`` files are the contract).

One class per record: the loop builds a :class:`Prediction`, the worker encodes its
:meth:`~Prediction.record` with the ``prediction`` schema, and the SDK decodes published
predictions back into the same class (:meth:`~Prediction.from_record`). A message as a
consumer receives it is a :class:`KafkaRecord`, whatever read it: the worker, the
archiver, the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Prediction:
    """One prediction (the ``prediction`` schema, v2), as served and as published."""

    event_id: str
    entity: str
    event_time: int
    model_name: str
    model_version: int
    labels_learned: int
    score: float  # P(positive) for binary, P(predicted class) for multiclass, the estimate for regression
    predicted: Any
    probabilities: dict[str, float]
    served_at: int = 0
    latency_ms: float = 0.0
    # its label had arrived first (parked) and is learned right after this batch: recorded so
    # a replay knows exactly where the worker learned it (feedback order alone cannot tell)
    label_joined: bool | None = False  # None: not recorded (a v1 record)
    shadows: list[Prediction] = field(default_factory=list, repr=False, compare=False)  # the other models' scores
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # fields of a newer schema version

    def record(self) -> dict[str, Any]:
        """The wire record (what the ``prediction`` schema encodes)."""
        out = {f: getattr(self, f) for f in _WIRE}
        out.update(self.extra)
        return out

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Prediction:
        """A decoded record -> Prediction; unknown (newer) fields are kept in ``extra``."""
        return cls(**{k: v for k, v in rec.items() if k in _WIRE},
                   extra={k: v for k, v in rec.items() if k not in _WIRE})


_WIRE = tuple(f.name for f in fields(Prediction) if f.name not in ("shadows", "extra"))


@dataclass(frozen=True)
class KafkaRecord:
    """One consumed Kafka message, transport-neutral. ``value`` is the raw bytes, or the
    decoded record where a reader decoded it (the SDK's consumers); ``kind`` is what the
    topic carries (``event``, ``feedback``, ``prediction``, ...) where the reader knows it."""

    kind: str
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (the broker's CreateTime or LogAppendTime)
    timestamp_type: int = 1
    key: bytes | None = None
    value: Any = None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def timestamp_ms(self) -> int:
        return self.timestamp
