"""Estimators: model specs, the learner (model + progressive metrics), batch-trained models."""
