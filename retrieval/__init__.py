"""Hybrid retrieval (pgvector HNSW + BM25, fused) with access control inside the query. Used by the
API, the agents and the Dagster evaluations; never imports Dagster or FastAPI."""
