"""History: the archive of every topic, backtests over it, and the batch retrainer.

* :mod:`~streamlearn.replay.archive`: the archiver (a Kafka consumer group), the on-disk
  format, storage, reading, inspecting and republishing.
* :mod:`~streamlearn.replay.backtest`: the archive (or any stream) through the online loop
  in-process, in the order the live worker saw it, with reports and plots.
* :mod:`~streamlearn.replay.retrain`: point-in-time training sets and the scikit-learn
  retrainer whose models enter through the same gate.
"""
