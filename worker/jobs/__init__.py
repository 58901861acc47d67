"""Celery side of the worker: the app (`app.py`) and one module of thin tasks per queue (ingest, asr,
infer, rules, notify). A task takes ids, calls a stage body in `worker.stages`, and enqueues the
follow-ups the stage returned once it has committed; nothing else lives here."""
