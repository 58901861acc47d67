"""Persistence: SQLAlchemy models, engine/session scoping and query functions."""
