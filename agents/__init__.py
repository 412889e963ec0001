"""Agent orchestrator, specialists, skills and tools. Never imports Dagster or FastAPI."""
