"""Embedded mode: the same pipeline stages the workers run, called in-process with no servers (their
follow-ups run through worker/jobs/inline.py, the same messages the workers send)."""

from __future__ import annotations

import functools
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api.timeline import recording_timeline
from api.transcript_upload import transcript_rows
from callpulse.settings import Settings
from db.migrate import upgrade
from db.models import Recording, RecordingStatus
from db.queries.corrections import put_transcript
from db.queries.tenants import get_or_create_tenant
from db.session import transaction
from worker import runtime
from worker.jobs.inline import run_inline
from worker.pipeline.media import decode
from worker.pipeline.text.transcript import TranscriptError
from worker.stages import lifecycle
from worker.stages.lifecycle import Followups

LOCAL_TENANT = "local"
log = logging.getLogger(__name__)


class Progress:
    """One status line per file on stderr; rewritten in place on a terminal."""

    def __init__(self, enabled: bool, total_files: int) -> None:
        self.enabled = enabled
        self.total_files = total_files
        self.tty = sys.stderr.isatty()

    def warn(self, text: str) -> None:
        sys.stderr.write(("\n" if self.tty and self.enabled else "") + f"warning: {text}\n")

    def update(self, n: int, name: str, text: str, final: bool = False) -> None:
        if not self.enabled:
            return
        line = f"[{n}/{self.total_files}] {name}: {text}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        elif final or "segments" not in text:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def analyze_files(
    paths: list[Path],
    channel_roles: dict[int, str],
    analyzed_roles: list[str],
    settings: Settings,
    show_progress: bool = True,
    transcripts: dict[Path, Path] | None = None,
    emotion_prior: str = "balanced",
) -> Iterator[dict[str, Any]]:
    """Analyze each file in turn and yield its timeline (the API's timeline fields plus `file`).
    ``transcripts``: a transcript file (JSON or WebVTT) per media file, where there is one."""
    transcripts = transcripts or {}
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    with transaction() as s:
        tenant = get_or_create_tenant(s, LOCAL_TENANT)
        # The embedded mode's policy is this run's options; recorded on the tenant for the rows it writes.
        tenant.analyzed_roles = [r for r in analyzed_roles if r != "unknown"]
        tenant.analyze_unknown_roles = "unknown" in analyzed_roles
        tenant.emotion_prior = emotion_prior
        tenant_id = tenant.id

    progress = Progress(show_progress, len(paths))
    progress.update(0, "model", f"loading {settings.model_backend} backend")
    load_started = time.perf_counter()
    model = runtime.emotion_model(settings)
    runtime.vad_model()
    if settings.asr_enabled and any(p not in transcripts for p in paths):
        # Loaded now, so a broken model stops the run with its reason instead of silently giving
        # every file no words (AsrUnavailable reaches the CLI).
        progress.update(0, "model", "loading speech recognition")
        runtime.asr_model(settings)
    # Said on its own: a short call's own time would otherwise look like it includes the load.
    progress.update(0, "model", f"models loaded in {time.perf_counter() - load_started:.1f} s "
                    f"({settings.model_backend} backend; once per run)", final=True)

    for n, path in enumerate(paths, start=1):
        started = time.perf_counter()
        progress.update(n, path.name, "decoding and segmenting")
        # --roles describes a channel layout; a file with another layout keeps 'unknown' roles
        # rather than having, say, a mono mix of both parties labelled with channel 0's role.
        roles: dict[str, str] = {}
        try:
            info = decode.probe(path)
            decode.check_duration(info, settings.min_duration_s, settings.max_duration_s)
            decode.check_budget(info, settings.sample_rate, settings.max_decoded_bytes)
            if len(channel_roles) == info.channels:
                roles = {str(ch): role for ch, role in channel_roles.items()}
            words = _transcript(transcripts.get(path), info, roles)
        except (decode.MediaError, TranscriptError) as exc:
            progress.update(n, path.name, f"failed: {exc.reason}", final=True)
            yield _failed(path, exc.reason)
            continue
        if channel_roles and not roles:
            progress.warn(f"{path.name} has {info.channels} channel(s) but --roles names "
                          f"{len(channel_roles)}: its speakers get role 'unknown'")
        with transaction() as s:
            rec = Recording(tenant_id=tenant_id, filename=path.name, media_uri=str(path.resolve()),
                            size_bytes=path.stat().st_size, container=info.format_name,
                            has_video=info.has_video, channels=info.channels, channel_roles=roles,
                            duration_s=info.duration_s)
            s.add(rec)
            s.flush()
            rec_id = rec.id
            if words is not None:
                put_transcript(s, rec_id, *words)

        try:
            # The same follow-ups a worker would send, from ingest on, run here one after another.
            run_inline(Followups(ingest=[rec_id]), settings, model,
                       on_status=functools.partial(progress.update, n, path.name),
                       on_warning=progress.warn)
        except Exception as exc:  # one broken file must not end a multi-file run
            log.exception("analysis of %s failed", path)
            lifecycle.fail_recording(rec_id, f"internal error: {type(exc).__name__}: {exc}"[:500], settings)
        result = _result(path, rec_id)
        elapsed = time.perf_counter() - started
        # Measured: the first file of a run also pays one-time warm-ups (first feature extraction,
        # lazily loaded models); later files of the same run show the steady speed.
        warm = " (includes one-time warm-up)" if n == 1 else ""
        progress.update(n, path.name, f"{result['status']}: {len(result['segments'])} segments, "
                        + speed_phrase(result.get("duration_s") or 0.0, elapsed) + warm, final=True)
        yield result


def speed_phrase(audio_s: float, elapsed_s: float) -> str:
    """How long the analysis took against the audio's own length, in words that cannot be misread
    ("3x real time" reads as "three times as long" to some)."""
    took = f"{audio_s:.1f} s of audio analyzed in {elapsed_s:.1f} s"
    if audio_s <= 0 or elapsed_s <= 0:
        return took
    ratio = audio_s / elapsed_s
    if ratio >= 1:
        return f"{took}, {ratio:.1f}× faster than real time"
    # Short calls: decoding, voice activity and per-call setup cost about the same for 3 s as for
    # 30 s, so the ratio says little about long calls; say so instead of printing "0x".
    return (f"{took}, {1 / ratio:.1f}× slower than real time (fixed per-call costs dominate a call this "
            "short; longer calls run faster than real time)")


def _transcript(path: Path | None, info: decode.MediaInfo, roles: dict[str, str]) -> tuple[
    str, list[dict[str, Any]]
] | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TranscriptError(f"cannot read transcript {path}: {exc.strerror}") from exc
    return transcript_rows(data, path.name, None, info.duration_s or None, info.channels, roles)


def _failed(path: Path, reason: str) -> dict[str, Any]:
    """The same keys as a timeline, for a file that never became a recording."""
    return {"file": str(path), "recording_id": None, "status": "failed", "duration_s": None,
            "error": reason, "segments": []}


def _result(path: Path, recording_id: uuid.UUID) -> dict[str, Any]:
    with transaction() as s:
        rec = s.get(Recording, recording_id)
        assert rec is not None
        body = recording_timeline(s, rec).model_dump(mode="json")
        out: dict[str, Any] = {"file": str(path)}
        out.update(body)
        if rec.status == RecordingStatus.failed.value:
            out["error"] = rec.error
        out["conversation"] = rec.conversation
        return out


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


def _summary(segments: list[dict[str, Any]], reasons: dict[str, int]) -> list[str]:
    """The per-call block above the timeline: per role what was found, start → end, the worst
    moment; each reason for skipping segments once (the policy sentence is long)."""
    lines = []
    for role in dict.fromkeys(seg["role"] for seg in segments):
        own = [seg for seg in segments if seg["role"] == role]
        analyzed = [seg for seg in own if seg.get("label") is not None]
        skipped = len(own) - len(analyzed)
        parts = [f"{len(own)} segment{'s' if len(own) != 1 else ''}"]
        if analyzed:
            counts: dict[str, int] = {}
            for seg in analyzed:
                counts[seg["label"]] = counts.get(seg["label"], 0) + 1
            ranked = sorted(counts.items(), key=lambda kv: -kv[1])
            parts.append(", ".join(f"{label} {n}" for label, n in ranked))
            parts.append(f"start {analyzed[0]['label']} → end {analyzed[-1]['label']}")
            rated = [seg for seg in analyzed if seg.get("valence") is not None]
            if rated:
                worst = min(rated, key=lambda seg: seg["valence"])
                parts.append(f"worst moment {_clock(worst['start_s'])} {worst['label']} "
                             f"(valence {worst['valence']:+.2f})")
            uncertain = sum(1 for seg in analyzed if seg.get("uncertain"))
            if uncertain:
                parts.append(f"{uncertain} uncertain")
        if skipped:
            marks = sorted({reasons[seg.get("skip_reason") or "pending"]
                            for seg in own if seg.get("label") is None})
            parts.append(f"{skipped} not analyzed " + " ".join(f"[{m}]" for m in marks))
        lines.append(f"   {role}: " + "; ".join(parts))
    for reason, mark in reasons.items():
        lines.append(f"   [{mark}] {reason}")
    return lines


def conversation_lines(m: dict[str, Any] | None) -> list[str]:
    """Talk time, silences, interruptions, talk speed and the customer's sentiment in three lines
    (docs/CONVERSATION.md)."""
    if not m:
        return []
    talk = ", ".join(f"{role} {t['seconds']:.1f} s ({t['share']:.0%})" for role, t in m["talk"].items())
    silences = m["non_talk"]["silences"]
    lines = [f"   talk: {talk}; non-talk {m['non_talk']['total_s']:.1f} s in {len(silences)} "
             f"silence{'s' if len(silences) != 1 else ''} over 2 s"]
    cuts = m["interruptions"]
    who = ", ".join(f"by {role} {n}" for role, n in cuts["by_role"].items())
    speed = ", ".join(f"{role} {v['words_per_minute']:.0f} wpm" if v["source"] == "words"
                      else f"{role} {v['syllables_per_s']:.1f} syllables/s"
                      for role, v in m["talk_speed"].items())
    lines.append(f"   interruptions: {cuts['count']}{f' ({who})' if who else ''}, overtalk "
                 f"{cuts['total_s']:.1f} s; talk speed: {speed or '—'}")
    feel = m["sentiment"]
    if feel["overall"] is not None:
        quarters = " / ".join("—" if q is None else f"{q:+.1f}" for q in feel["by_quarter"])
        trend = "" if feel["trend"] is None else f"; trend {feel['trend']:+.1f}"
        lines.append(f"   {feel['role']} sentiment (−5..+5): {feel['overall']:+.1f}; "
                     f"by quarter {quarters}{trend}")
    return lines


def format_table(result: dict[str, Any]) -> str:
    """A readable timeline: a summary block per call, then one line per segment, its reasons
    indented beneath."""
    head = f"== {result['file']}"
    if result.get("duration_s"):
        head += f"  ({_clock(result['duration_s'])}, {result['status']})"
    if result.get("transcript_source"):
        head += f"  words: {result['transcript_source']}" + (f" ({result['language']})"
                                                             if result.get("language") else "")
    lines = [head]
    if result.get("error"):
        lines.append(f"   error: {result['error']}")
    segments = result.get("segments", [])
    reasons: dict[str, int] = {}
    for seg in segments:
        if seg.get("label") is None:
            reasons.setdefault(seg.get("skip_reason") or "pending", len(reasons) + 1)
    if segments:
        lines += _summary(segments, reasons)
        lines += conversation_lines(result.get("conversation"))
        lines.append("")
    for seg in segments:
        span = f"{_clock(seg['start_s'])}–{_clock(seg['end_s'])}"
        role = f"{seg['role']:<9}"
        if seg.get("label") is None:
            lines.append(f"  {span}  {role} —  not analyzed [{reasons[seg.get('skip_reason') or 'pending']}]")
            if seg.get("words"):
                lines.append(f"      words: {' '.join(w['word'] for w in seg['words'])}")
            continue
        va = ""
        if seg.get("valence") is not None:
            va = f"  valence {seg['valence']:+.2f} arousal {seg['arousal']:.2f}"
        doubt = "  UNCERTAIN" if seg.get("uncertain") else ""
        lines.append(f"  {span}  {role} {seg['label']:<8} {seg['confidence']:.2f}{va}{doubt}")
        if seg.get("reasoning_text"):
            lines.append(f"      {seg['reasoning_text'].splitlines()[0]}")
        if seg.get("words"):
            lines.append(f"      words: {' '.join(w['word'] for w in seg['words'])}")
        for item in seg.get("reasoning", []):
            cue = f"[{item['modality']}/{item['cue']}]"
            lines.append(f"      {_clock(item['start_s'])}  {cue} {item['text']}")
    return "\n".join(lines)
