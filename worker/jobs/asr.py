"""Task of the ``asr`` queue: our own speech recognition before inference, on the worker that holds
the Whisper model. Unlike the other stages, giving up never fails the call: it is analyzed without
words (worker/stages/asr.py)."""

from __future__ import annotations

import logging
import uuid

from celery import Task

from callpulse.settings import get_settings
from worker.jobs import names
from worker.jobs.app import app
from worker.jobs.enqueue import enqueue
from worker.jobs.retry import reason, retry_unless_exhausted

log = logging.getLogger(__name__)


@app.task(bind=True, **names.TRANSCRIBE.options())
def transcribe_recording(self: Task, recording_id: str) -> None:
    from worker.stages import asr as asr_stage

    rec_id = uuid.UUID(recording_id)
    try:
        followups = asr_stage.transcribe_recording(rec_id, get_settings())
    except Exception as exc:
        retry_unless_exhausted(self, exc, names.TRANSCRIBE)
        log.exception("ASR gave up after %d retries", self.request.retries)
        followups = asr_stage.continue_without_words(
            rec_id, get_settings(), "ASR failed: " + reason(exc, "ASR", names.TRANSCRIBE))
    enqueue(followups)
