"""Evaluations and the quality loop: feedback → source boosts, golden evaluation (the promotion
gate), fine-tuning datasets, and the golden/ data. Wrapped by Dagster assets."""
