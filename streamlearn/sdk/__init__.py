"""Client SDK: send events and labels, read predictions (any Kafka, incl. the embedded broker).

Everything takes a :class:`~streamlearn.settings.Settings`, so bootstrap address, SASL/SSL
and topic names come from the one settings object (or ``STREAMLEARN_*`` / ``KAFKA_BOOTSTRAP``).

* :class:`EventProducer` / :class:`FeedbackProducer` check each record exactly as the worker
  will (the Avro codec's schema check, then the worker's own limits and finiteness checks on
  the very bytes to be sent; a label also against the task of a worker with the same settings)
  and raise :class:`InvalidRecord` naming the bad field, so bad
  input is refused at the source instead of landing in the dead-letter topic. Records are
  encoded as Avro single-object (``C3 01`` + fingerprint + body) and batched by
  confluent-kafka; each send returns a future and can also report to a callback.
* :class:`PredictionConsumer` iterates typed :class:`Prediction` objects, alone (no group,
  no commits) or in a consumer group, from the end, the beginning or a timestamp; with
  ``dedupe=True`` it drops repeats of an event id (delivery is at least once).
* :class:`RecordConsumer` is the same consumer over any topic and schema subject
  (dead letters, drift, lifecycle).

The checks need no broker:

>>> from streamlearn.schemas import AvroCodec
>>> data = encode_event({"event_id": "e1", "entity": "card-7", "event_time": 1700000000000,
...                      "features": {"amount": 12.5, "category": "fuel"}})
>>> data[:2].hex(), len(data) > 10
('c301', True)
>>> encode_event({"event_id": "e1", "entity": "card-7", "event_time": "yesterday", "features": {}})
Traceback (most recent call last):
...
streamlearn.schemas.codec.InvalidRecord: schema: invalid value for streamlearn.v1.Event.event_time
>>> encode_event({"event_id": "e1", "entity": "c", "event_time": 1, "features": {"amount": float("nan")}})
Traceback (most recent call last):
...
streamlearn.schemas.codec.InvalidRecord: non_finite: 'features.amount' is nan
>>> encode_feedback({"event_id": "e1", "label": True, "label_time": 1700000060000})[:2].hex()
'c301'
>>> decode_prediction(AvroCodec.default().encode("prediction", {
...     "event_id": "e1", "entity": "card-7", "event_time": 1, "model_name": "default", "model_version": 1,
...     "labels_learned": 0, "score": 0.25, "predicted": False, "probabilities": {}, "served_at": 2,
...     "latency_ms": 3.5})).score
0.25
"""

from streamlearn.schemas import InvalidRecord
from streamlearn.schemas.records import Prediction
from streamlearn.sdk.consumers import (
    ConsumedRecord,
    InvalidMessage,
    PredictionConsumer,
    RecordConsumer,
    decode_prediction,
)
from streamlearn.sdk.producers import (
    Delivery,
    DeliveryError,
    DeliveryFuture,
    EventProducer,
    FeedbackProducer,
    encode_event,
    encode_feedback,
    now_ms,
)
from streamlearn.streams.gapguard import OffsetGapError

__all__ = [
    "ConsumedRecord", "Delivery", "DeliveryError", "DeliveryFuture", "EventProducer", "FeedbackProducer",
    "InvalidMessage", "InvalidRecord", "OffsetGapError", "Prediction", "PredictionConsumer", "RecordConsumer",
    "decode_prediction", "encode_event", "encode_feedback", "now_ms",
]
