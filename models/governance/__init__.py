"""Governance of model changes: gate, canary, drift detectors, the lifecycle, their evaluations."""
