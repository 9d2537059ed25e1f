"""Budget-aware design-space exploration of the SqueezeNet family with Optuna (``python -m explore``).

``space`` (design points, schedules, the named studies), ``trial`` (one point through the project's
stages), ``measure`` (the hardware figures of a trained point), ``study`` (Optuna storage and workers,
points.jsonl), ``report`` (Pareto fronts, picks, plots, report.md).
"""
