"""Celery app, tasks and the pipeline stages they call."""
