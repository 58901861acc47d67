"""One open live stream, whatever its wire format: decoded audio goes to disk and through the
streaming VAD, closed segments go to the infer queue, and analyzed segments and alerts go back to
the client as they land.

The heavy or blocking parts (VAD, prosody, database, broker) run in a worker thread, one call at a
time per stream, so the event loop only moves messages. Postgres stays the source of truth: the
pump that feeds the client reads predictions and alerts from it, exactly what GET /v1/recordings
and the webhooks see."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from anyio import to_thread
from sqlalchemy import select

from api.schemas import TimelineSegment
from callpulse.settings import Settings
from db.models import Alert, Prediction, Segment
from db.queries.alerts import alert_context
from db.queries.corrections import get_transcript
from db.session import transaction
from worker.jobs import names, outbox
from worker.notify import events
from worker.pipeline.media import live_audio
from worker.pipeline.speech.stream_vad import StreamSegmenter, VadNet, keeps
from worker.pipeline.text.transcript_index import TranscriptIndex
from worker.stages import live as live_stage

log = logging.getLogger(__name__)

INFER_TASK = names.INFER.name
# After the last segment event, alerts from the rules queue are looked for this long at the fast pace.
ALERTS_FOLLOW_S = 5.0
ALERT_ONLY_POLL_S = 2.0
# Audio gathered per trip to the worker thread (it delays a segment's closing by at most this).
BATCH_S = 0.2
_net: VadNet | None = None
_net_lock = threading.Lock()


def vad_net() -> VadNet:
    """One silero session per API process, shared by every stream (each keeps its own state)."""
    global _net
    with _net_lock:
        if _net is None:
            _net = VadNet()
        return _net


class TooLong(Exception):
    """The call passed CALLPULSE_LIVE_MAX_DURATION_S."""


Send = Callable[[dict[str, Any]], Awaitable[None]]


class LiveCall:
    def __init__(self, settings: Settings, opened: live_stage.Opened, send: Send | None) -> None:
        from worker.stages.ingest import segmentation_config

        self.settings = settings
        self.opened = opened
        self.send = send  # None: the wire format has no place for our events (Twilio)
        channels = len(opened.roles)
        self.writer = live_audio.LiveWriter(opened.folder, channels)
        self.segmenter = StreamSegmenter(vad_net(), channels, segmentation_config(settings))
        self._lock = threading.Lock()
        self.awaiting: dict[uuid.UUID, None] = {}  # segments whose event is not sent yet, in order
        self.sent_alerts: set[uuid.UUID] = set()
        self.heartbeat_s = min(60.0, settings.stuck_after_s / 4)
        self._last_beat = time.monotonic()
        self.pump_task: asyncio.Task[None] | None = None
        self.buffered: list[list[np.ndarray]] = []
        self.buffered_samples = 0

    @property
    def recording_id(self) -> uuid.UUID:
        return self.opened.recording_id

    async def audio(self, channel_samples: list[np.ndarray]) -> None:
        """Frames are gathered to BATCH_S of audio before one trip to the worker thread: telephony
        sends 20 ms frames, and a thread hop per frame costs more than the work in it."""
        self.buffered.append(channel_samples)
        self.buffered_samples += max(samples.size for samples in channel_samples)
        if self.buffered_samples >= BATCH_S * live_audio.SAMPLE_RATE:
            await self.flush()

    async def flush(self) -> None:
        if not self.buffered:
            return
        channels = range(len(self.opened.roles))
        joined = [np.concatenate([frame[c] for frame in self.buffered]) for c in channels]
        self.buffered, self.buffered_samples = [], 0
        await to_thread.run_sync(self._ingest, joined)

    def _ingest(self, channel_samples: list[np.ndarray]) -> None:
        self.writer.append(channel_samples)  # on disk before any segment points at it
        if self.writer.samples_written / live_audio.SAMPLE_RATE > self.settings.live_max_duration_s:
            raise TooLong(f"the call is longer than the limit of {self.settings.live_max_duration_s:.0f} s "
                          "(CALLPULSE_LIVE_MAX_DURATION_S); the audio up to it is analyzed")
        self._store(self.segmenter.feed(channel_samples))
        if time.monotonic() - self._last_beat > self.heartbeat_s:
            live_stage.heartbeat(self.recording_id, self.writer.samples_written / live_audio.SAMPLE_RATE)
            self._last_beat = time.monotonic()

    def _store(self, closed: list[Any]) -> None:
        spans = [live_stage.NewSegment(c.channel, c.start_s, c.end_s) for c in closed if keeps(c)]
        if not spans:
            return
        stored = live_stage.add_segments(self.opened, spans)
        with self._lock:
            for seg_id, _ in stored:
                self.awaiting[seg_id] = None
        to_infer = [str(seg_id) for seg_id, analyzed in stored if analyzed]
        if to_infer:
            try:
                outbox.send(INFER_TASK, [to_infer])
            except Exception:
                # The segments are committed; the sweep finds them once the call has ended.
                log.warning("could not enqueue inference for live recording %s", self.recording_id,
                            exc_info=True)

    async def end(self, disconnected: bool) -> None:
        """Close what the VAD still holds, turn the audio into the recording's WAV, hand the call
        to the usual completion (rollup, rules' final pass, recording.completed)."""
        with contextlib.suppress(TooLong):  # the audio up to the limit is on disk and reported
            await self.flush()
        await to_thread.run_sync(self._end, disconnected)

    def _end(self, disconnected: bool) -> None:
        from worker.jobs import lease
        from worker.jobs.enqueue import enqueue_rule_work

        try:
            closed = self.segmenter.finish()
            self.writer.close()
            self._store(closed)
            followups = live_stage.finish(self.recording_id, self.settings, disconnected)
        except BaseException:
            lease.release_for(self.opened.lease_ids, delete=False)  # runs out: the sweep finishes it
            raise
        lease.release_for(self.opened.lease_ids, delete=True)
        try:
            enqueue_rule_work(followups.evaluate_rules, followups.completed, followups.failed)
        except Exception:
            log.warning("could not enqueue the final pass of live recording %s; the sweep publishes it",
                        self.recording_id, exc_info=True)

    # --- pushing analyzed segments and alerts to the client ---

    def start_pump(self) -> None:
        if self.send is not None:
            self.pump_task = asyncio.create_task(self._pump())

    async def stop_pump(self) -> None:
        if self.pump_task is not None:
            self.pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump_task
            self.pump_task = None

    async def _pump(self) -> None:
        """Reads the database only when something can be there: while segments await their
        analysis, for a few seconds after one was sent (its alerts come from the rules queue after
        it), and otherwise every ALERT_ONLY_POLL_S (a rule may fire on an agent's turn or a silence)."""
        quiet_since = time.monotonic()
        last_poll = 0.0
        while True:
            now = time.monotonic()
            if self.pending() or now - quiet_since < ALERTS_FOLLOW_S or now - last_poll >= ALERT_ONLY_POLL_S:
                if self.pending():
                    quiet_since = now
                last_poll = now
                await self.push_ready()
            await asyncio.sleep(self.settings.live_poll_s)

    async def push_ready(self) -> None:
        if self.send is None:
            return
        for message in await to_thread.run_sync(self._ready):
            await self.send(message)

    def pending(self) -> int:
        with self._lock:
            return len(self.awaiting)

    def _ready(self) -> list[dict[str, Any]]:
        """Segments that got their prediction (or will never get one) and alerts not sent yet."""
        with self._lock:
            waiting = list(self.awaiting)
        out: list[dict[str, Any]] = []
        with transaction() as s:
            if waiting:
                segments = {seg.id: seg for seg in s.scalars(select(Segment).where(Segment.id.in_(waiting)))}
                predictions: dict[uuid.UUID, Prediction] = {}
                for p in s.scalars(select(Prediction).where(Prediction.segment_id.in_(waiting))
                                   .order_by(Prediction.created_at)):
                    predictions[p.segment_id] = p
                # Words the infer worker heard in the segments (worker/stages/live_words.py): stored
                # before their predictions, so a segment ready here has its words too.
                row = get_transcript(s, self.recording_id)
                heard = TranscriptIndex.from_rows(row.utterances) if row is not None else None
                for seg_id in waiting:
                    seg = segments.get(seg_id)
                    if seg is None or (seg.analyzed and seg_id not in predictions):
                        continue
                    words = heard.words(seg.start_s, seg.end_s, seg.channel) if heard else ()
                    body = TimelineSegment.build(seg, predictions.get(seg_id), words).model_dump(mode="json")
                    out.append({"event": "segment", **body})
                    with self._lock:
                        self.awaiting.pop(seg_id, None)
            alerts = s.scalars(select(Alert).where(Alert.recording_id == self.recording_id)
                               .order_by(Alert.fired_at, Alert.id))
            for alert in alerts:
                if alert.id in self.sent_alerts:
                    continue
                rule, rec = alert_context(s, alert)
                data = events.alert_data(alert, rule, rec).model_dump(mode="json")
                out.append({"event": "alert", **data})
                self.sent_alerts.add(alert.id)
        return out

    async def drain(self) -> None:
        """After stop: push segments as their analysis lands, up to CALLPULSE_LIVE_STOP_WAIT_S."""
        deadline = time.monotonic() + self.settings.live_stop_wait_s
        while True:
            await self.push_ready()
            if not self.pending() or time.monotonic() > deadline:
                return
            await asyncio.sleep(self.settings.live_poll_s)
