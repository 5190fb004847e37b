"""The ingestion pipeline: journal, router, fetcher, extractor, rules and what they need."""
