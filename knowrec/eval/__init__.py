"""Offline evaluation (protocols, metrics, baselines, reports) — filled by the evaluation issue."""
