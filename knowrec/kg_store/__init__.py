"""Graph store, vector index, embedder and ingest."""
