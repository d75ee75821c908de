"""Semantic search adapters: embedders, the local vector index, the OpenSearch index, and the
indexer that ties them together. Import submodules directly; nothing heavy loads here."""
