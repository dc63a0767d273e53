"""The online loop (pure of Kafka): its coordinator :class:`OnlineLoop` and one module per job."""

from streamlearn.streams.loop.checkpoints import read_checkpoint
from streamlearn.streams.loop.core import Counters, OnlineLoop, Outbox
from streamlearn.streams.loop.labels import LearnReport

__all__ = ["Counters", "LearnReport", "OnlineLoop", "Outbox", "read_checkpoint"]
