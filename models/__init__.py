"""Learning and its governance: what the online loop scores with and how models change.

* :mod:`~streamlearn.models.estimators`: model specs -> River estimators, the learner (a
  model with its progressive metrics), the batch-trained model behind River's interface.
* :mod:`~streamlearn.models.modelset`: the models one loop runs (champion, shadows, canary).
* :mod:`~streamlearn.models.governance`: the promotion gate, canary, drift detectors and the
  lifecycle that combines them, with their simulations (``gate-eval``, ``drift-eval``).
* :mod:`~streamlearn.models.registry`: every model version, its lineage and stage, stored
  as signed artifacts (:mod:`~streamlearn.models.artifacts`).
"""
