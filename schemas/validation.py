"""Decoding and validating input messages: Avro or JSON -> a checked record, or InvalidRecord.

Everything that can be wrong with an input message is caught here, so the agents never
crash on bad input: they dead-letter the raw bytes with the reason code and detail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamlearn.schemas import AvroCodec, InvalidRecord


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 256 * 1024
    max_features: int = 512
    max_string_length: int = 1024
    # Finite doubles near 1.8e308 overflow to inf in the feature views' running sums: two such
    # amounts for one entity made the next event's log-ratio raise (a crash, then a crash loop
    # on re-delivery). Within 1e100 every sum, mean and square stays finite; int64s always are.
    max_abs_number: float = 1e100

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.max_message_bytes, settings.max_features, settings.max_string_length)


def _check_str(name: str, value: str, limits: Limits, *, empty_ok: bool = False) -> None:
    if not empty_ok and not value:
        raise InvalidRecord("schema", f"'{name}' must not be empty")
    if len(value) > limits.max_string_length:
        raise InvalidRecord("limit", f"'{name}' is {len(value)} chars, over the {limits.max_string_length} limit")


def _check_number(name: str, value: Any, limits: Limits) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRecord("non_finite", f"'{name}' is {value}")
        if abs(value) > limits.max_abs_number:
            raise InvalidRecord("limit", f"'{name}' is {value:.3g}, beyond ±{limits.max_abs_number:.0e}")


def _check_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_message_bytes:
        raise InvalidRecord("limit", f"message is {len(data)} bytes, over the {limits.max_message_bytes} limit")


def decode_event(data: bytes | None, registry: AvroCodec, limits: Limits) -> dict[str, Any]:
    if not data:
        raise InvalidRecord("empty", "message has no value")
    _check_size(data, limits)
    ev = registry.decode("event", data)
    _check_str("event_id", ev["event_id"], limits)
    _check_str("entity", ev["entity"], limits)
    feats = ev["features"]
    if len(feats) > limits.max_features:
        raise InvalidRecord("limit", f"{len(feats)} features, over the {limits.max_features} limit")
    for k, v in feats.items():
        _check_str("feature name", k, limits)
        if isinstance(v, str):
            _check_str(f"features.{k}", v, limits, empty_ok=True)
        else:
            _check_number(f"features.{k}", v, limits)
    return ev


def decode_feedback(data: bytes | None, registry: AvroCodec, limits: Limits) -> dict[str, Any]:
    if not data:
        raise InvalidRecord("empty", "message has no value")
    _check_size(data, limits)
    fb = registry.decode("feedback", data)
    _check_str("event_id", fb["event_id"], limits)
    label = fb["label"]
    if isinstance(label, str):
        _check_str("label", label, limits)
    else:
        _check_number("label", label, limits)
    return fb


def feedback_decoder(registry: AvroCodec, limits: Limits) -> Callable[[bytes | None], dict[str, Any]]:
    """:func:`decode_feedback` bound to ``registry`` and ``limits``: the same record, or the
    same InvalidRecord. A message of the current schema that its compiled reader reads whole,
    with an event id and a bool, int or in-range float label (what the learner gets), is
    checked inline, as decode_feedback checks it; anything else goes through decode_feedback."""
    from streamlearn.schemas.codec import FAST_READ_ERRORS, HEADER_LEN

    current = registry._current  # noqa: SLF001 - the schema version decode would read with
    sv, read = registry.current_reader("feedback")
    header, max_bytes, max_str, max_abs = sv.header, limits.max_message_bytes, limits.max_string_length, \
        limits.max_abs_number
    isfinite = math.isfinite

    def decode(data: bytes | None) -> dict[str, Any]:
        if (read is not None and type(data) is bytes and data[:HEADER_LEN] == header and len(data) <= max_bytes
                and current["feedback"] is sv):
            try:
                fb, end = read(data, HEADER_LEN)
            except FAST_READ_ERRORS:
                return decode_feedback(data, registry, limits)
            eid, label = fb["event_id"], fb["label"]
            t = type(label)
            if end == len(data) and eid and len(eid) <= max_str and (
                    t is bool or t is int or (t is float and isfinite(label) and abs(label) <= max_abs)):
                return fb
        return decode_feedback(data, registry, limits)

    return decode


def check_label(fb: dict[str, Any], task: Any) -> dict[str, Any]:
    """``fb`` with its label as ``task`` (a :class:`~streamlearn.models.task.Task`) learns it, or
    InvalidRecord ``label``: the worker's check of a decoded label, also run by ``streamlearn
    feedback`` before it sends, so a label the worker would dead-letter is refused at the source."""
    try:
        fb["label"] = task.check_label(fb["label"])
    except ValueError as exc:  # e.g. a string label for a regression
        raise InvalidRecord("label", f"{exc} (task: {task.kind})") from None
    return fb
