"""The quality loop: feedback → source boosts, fine-tuning datasets. Wrapped by Dagster assets."""
