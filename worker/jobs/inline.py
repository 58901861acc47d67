"""Follow-ups run in this process instead of sent: the embedded mode (`callpulse analyze`, no broker,
no workers). It takes the very messages worker/jobs/enqueue.py would send (`messages`) and runs each
by calling the stage function its Celery task calls, looked up by task name in `RUNNERS`, until no
follow-ups remain. One table keyed by the names in worker/jobs/names.py, so a new follow-up kind
cannot be sent by the workers and forgotten here (a contract test holds every kind to a runner)."""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from callpulse.settings import Settings
from worker.jobs import names
from worker.jobs.enqueue import Message, messages
from worker.stages import infer, ingest
from worker.stages.lifecycle import Followups

if TYPE_CHECKING:
    from worker.pipeline.contracts import EmotionModel

log = logging.getLogger(__name__)


class InlineRunner:
    """Runs one recording's follow-ups to the end. ``on_status`` gets the progress text
    ("transcribing", "segments done/total"), ``on_warning`` what the user should hear about."""

    def __init__(self, settings: Settings, model: EmotionModel | None,
                 on_status: Callable[[str], None], on_warning: Callable[[str], None]) -> None:
        self.settings = settings
        self.model = model
        self.on_status = on_status
        self.on_warning = on_warning
        self.segments_total = 0
        self.segments_done = 0

    def run(self, followups: Followups) -> None:
        # First in, first out: the order a single worker per queue would run them in.
        pending: deque[Message] = deque()
        self._admit(pending, followups)
        while pending:
            message = pending.popleft()
            self._admit(pending, RUNNERS[message.task](self, *message.args))

    def _admit(self, pending: deque[Message], followups: Followups) -> None:
        for message in messages(followups):
            if message.task == names.INFER.name:
                self.segments_total += len(message.args[0])
            pending.append(message)

    # One method per task, taking the arguments its Celery task takes.

    def ingest(self, recording_id: str) -> Followups:
        return ingest.ingest(uuid.UUID(recording_id), self.settings)

    def transcribe(self, recording_id: str) -> Followups:
        """The asr stage; whatever goes wrong there, the file is still analyzed by voice (a worker
        retries first; here the user is told at once)."""
        from worker.stages import asr as asr_stage

        rec_id = uuid.UUID(recording_id)
        self.on_status("transcribing")
        try:
            return asr_stage.transcribe_recording(rec_id, self.settings)
        except Exception as exc:
            log.exception("ASR of recording %s failed", rec_id)
            self.on_warning(f"speech recognition failed ({type(exc).__name__}: {exc}); "
                            "analyzing without words")
            return asr_stage.continue_without_words(rec_id, self.settings, f"{type(exc).__name__}: {exc}")

    def infer(self, segment_ids: list[str]) -> Followups:
        self.on_status(f"segments {self.segments_done}/{self.segments_total}")
        followups = infer.infer([uuid.UUID(i) for i in segment_ids], self.settings, self.model)
        self.segments_done += len(segment_ids)
        return followups

    def resume(self, recording_id: str) -> Followups:
        return infer.resume(uuid.UUID(recording_id), self.settings, self.model)

    def evaluate_rules(self, recording_id: str, final: bool = False) -> Followups:
        # `callpulse analyze` has never run escalation rules or alerts: the timeline it prints is
        # its result, and nobody is subscribed to hear about it.
        return Followups()

    def publish(self, recording_id: str, event: str) -> Followups:
        # No webhooks in the embedded mode: a failed file's reason is in its printed result.
        return Followups()


RUNNERS: dict[str, Callable[..., Followups]] = {
    names.INGEST.name: InlineRunner.ingest,
    names.TRANSCRIBE.name: InlineRunner.transcribe,
    names.INFER.name: InlineRunner.infer,
    names.RESUME.name: InlineRunner.resume,
    names.EVALUATE.name: InlineRunner.evaluate_rules,
    names.PUBLISH.name: InlineRunner.publish,
}


def run_inline(followups: Followups, settings: Settings, model: EmotionModel | None = None,
               on_status: Callable[[str], None] = lambda text: None,
               on_warning: Callable[[str], None] = lambda text: None) -> None:
    InlineRunner(settings, model, on_status, on_warning).run(followups)

