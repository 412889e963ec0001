"""Document ingestion shared by Dagster, the API and the CLI: submission, the pipeline stages and
their store, parsing, chunking, the file store, the inbox (source files), intake and recovery.
Writes the search index through retrieval.writer; never imports Dagster or FastAPI."""
