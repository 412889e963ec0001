"""Test-only servers and helpers shared by several test tiers (not test modules: nothing here is collected)."""
