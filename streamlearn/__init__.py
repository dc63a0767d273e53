"""streamlearn: streaming online learning on Kafka + Redis.

Packages are layers (see docs/architecture.md): ``schemas`` (wire records and their Avro
codec), ``featurestore`` (feature views, key layout, state backends), ``models``
(estimators, governance, registry), ``streams`` (the online loop and its Kafka wiring),
``replay`` (archive, backtest, retrain); here: settings, metrics, datasets, the CLI,
the SDK and the development tools.
"""

__version__ = "0.1.0"
