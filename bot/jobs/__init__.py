"""Jobs: the store (SQLite or PostgreSQL), job states and failure categories, and the worker
that claims, heartbeats, runs and ends them."""
