"""The search index's one owner: the tokenizer and BM25 formula (lexical) shared by the writer and the
reader, the index writer, hybrid search (pgvector HNSW + BM25, fused) with access control inside the
query, index versions, builds/promotion and the index invariants (checks). Used by ingestion, the API,
the agents and the Dagster evaluations; never imports Dagster or FastAPI."""
