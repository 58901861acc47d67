"""The HTTP API: ingestion, queries and auth over the database the workers fill."""
