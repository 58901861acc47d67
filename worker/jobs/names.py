"""Every task, declared once: its name (as the broker carries it), its queue, its retry policy and
the setting that bounds how long it may run. Routing (app.py), the task decorators and every
sender (the API, the stages' follow-ups, the embedded runner) read from here, and send by name, so
the API never imports a task's module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callpulse.settings import Settings, get_settings
from worker.jobs.retry import FOLLOW_UP, PIPELINE, RetryPolicy

# Between the soft limit (the task records its failure) and the hard one (the pool kills it).
HARD_LIMIT_GRACE_S = 30.0


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: str
    # None: a periodic task; the next beat tick is its retry.
    retry: RetryPolicy | None

    @property
    def time_limit_field(self) -> str:
        """The Settings field with this task's soft time limit (one per queue)."""
        return f"{self.queue}_time_limit_s"

    @property
    def time_limit_env(self) -> str:
        return f"CALLPULSE_{self.time_limit_field.upper()}"

    def time_limit_s(self, settings: Settings | None = None) -> float:
        return float(getattr(settings or get_settings(), self.time_limit_field))

    def options(self) -> dict[str, Any]:
        """Keyword arguments of this task's decorator: name and soft/hard time limits."""
        soft = self.time_limit_s()
        return {"name": self.name, "soft_time_limit": soft, "time_limit": soft + HARD_LIMIT_GRACE_S}


INGEST = TaskSpec("callpulse.ingest_recording", "ingest", PIPELINE)
SWEEP = TaskSpec("callpulse.sweep_stuck_recordings", "ingest", None)
RETENTION = TaskSpec("callpulse.apply_retention", "ingest", None)
# The ingest worker sees the media volume: orphan folders and leftover decoded caches.
SWEEP_MEDIA = TaskSpec("callpulse.sweep_media", "ingest", None)
# The infer worker runs the model, so it is the one that knows which version rescoring targets.
INFER = TaskSpec("callpulse.infer_segments", "infer", PIPELINE)
RESCORE = TaskSpec("callpulse.rescore_recording", "infer", PIPELINE)
# A stuck call, handed over by the sweep: decided with the infer worker's own model version.
RESUME = TaskSpec("callpulse.resume_recording", "infer", PIPELINE)
# Our own speech recognition: the worker that holds the Whisper model.
TRANSCRIBE = TaskSpec("callpulse.transcribe_recording", "asr", PIPELINE)
EVALUATE = TaskSpec("callpulse.rules.evaluate_recording", "rules", FOLLOW_UP)
PUBLISH = TaskSpec("callpulse.notify.publish_recording_event", "notify", FOLLOW_UP)
DELIVER = TaskSpec("callpulse.notify.deliver", "notify", FOLLOW_UP)
SWEEP_DELIVERIES = TaskSpec("callpulse.notify.sweep_deliveries", "notify", None)

TASKS: tuple[TaskSpec, ...] = (INGEST, SWEEP, RETENTION, SWEEP_MEDIA, INFER, RESCORE, RESUME, TRANSCRIBE,
                               EVALUATE, PUBLISH, DELIVER, SWEEP_DELIVERIES)
QUEUES: tuple[str, ...] = ("ingest", "infer", "rules", "notify", "asr")
# Routing by task name: the broker carries ids only, Postgres holds the truth.
TASK_ROUTES: dict[str, dict[str, str]] = {t.name: {"queue": t.queue} for t in TASKS}


def longest_hard_limit_s(settings: Settings) -> float:
    return max(t.time_limit_s(settings) for t in TASKS) + HARD_LIMIT_GRACE_S
