"""Backtests: recorded history through the online loop in-process, reproducing live runs."""
