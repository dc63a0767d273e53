"""Transport: the online loop (pure of Kafka) and its wiring to Kafka through Faust.

* :mod:`~streamlearn.streams.loop`: score batches of events, join and learn labels,
  operator commands, checkpoints; the same code live, in backtests and behind ``/score``.
* :mod:`~streamlearn.streams.worker`: decode -> loop -> emit for a batch of Kafka messages.
* :mod:`~streamlearn.streams.app`: the Faust app and its thin agents, timers and web API.
* :mod:`~streamlearn.streams.transport`: topics, producers and consumer settings.
"""
