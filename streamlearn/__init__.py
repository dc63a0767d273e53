"""streamlearn: streaming online learning on Kafka + Redis.

Folders are concepts: ``schemas`` (wire formats), ``featurestore`` (feature views and
state backends), ``models`` (River estimators, learners, artifacts), ``streams`` (the
online loop and its Faust wiring), ``replay`` (in-process runs over recorded streams).
"""

__version__ = "0.1.0"
