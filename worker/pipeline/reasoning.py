"""Evidence items and a short reasoning text from prosody and class scores (any audio backend).

Every item carries absolute call times inside the segment, so a supervisor can jump to the
moment that justifies the label. Comparisons are against the speaker's own call baseline when
there is one (people differ far more from each other than from themselves), otherwise against
rough population norms, and the text says which.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.pipeline.contracts import Acoustics, Evidence

_TIME = re.compile(r"\d\d:\d\d\.\d")
PEAK_WINDOW_S = 0.5
# Rough norms for conversational speech, used only when the speaker has no call baseline.
# Absolute pitch is not compared at all: it mostly says whether a voice is low or high.
NORM_LOUDNESS_DBFS = -26.0
NORM_RATE_PER_S = 4.0
NORM_PITCH_RANGE_ST = 6.0
# What counts as "one unit" of deviation when ranking cues for the reasoning text.
SALIENCE_UNIT = {"pitch": 15.0, "loudness": 4.0, "speech_rate": 20.0, "pitch_range": 3.0}


def format_time(seconds: float) -> str:
    """Call time as mm:ss.s (minutes keep counting past 60)."""
    tenths = max(0, round(seconds * 10))
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float

    def clip(self, start: float, end: float) -> tuple[float, float]:
        lo = min(max(start, self.start_s), self.end_s)
        hi = max(min(end, self.end_s), lo)
        return lo, hi

    def window(self, offset_s: float) -> tuple[float, float]:
        """PEAK_WINDOW_S around an offset (from segment start), kept inside the segment."""
        centre = self.start_s + offset_s
        return self.clip(centre - PEAK_WINDOW_S / 2, centre + PEAK_WINDOW_S / 2)

    def at(self, offset_s: float) -> str:
        """The call time of an offset (from segment start), clamped to the segment, as mm:ss.s."""
        return format_time(min(max(self.start_s + offset_s, self.start_s), self.end_s))

    def label(self) -> str:
        return f"{format_time(self.start_s)}–{format_time(self.end_s)}"


def _item(start: float, end: float, cue: str, value: float | str | None, text: str) -> Evidence:
    return Evidence(start_s=float(start), end_s=float(end), modality="audio", cue=cue, value=value, text=text)


def _percent(value: float, reference: float) -> float:
    return 100.0 * (value - reference) / reference


def _direction(delta: float, up: str, down: str) -> str:
    return up if delta >= 0 else down


def _versus(amount: str, delta: float, up: str, down: str, same: str) -> str:
    """'31% above' / '2.0 dB quieter than', or 'at' when the rounded amount is zero (no '0% above')."""
    if not any(ch in "123456789" for ch in amount):
        return same
    return f"{amount} {_direction(delta, up, down)}"


def prosody_evidence(acoustics: Acoustics, baseline: Acoustics | None, span: Span) -> list[Evidence]:
    """Pitch, loudness, speech-rate and pitch-range cues, strongest first."""
    base = baseline or {}
    items: list[tuple[float, Evidence]] = []
    pitch = acoustics.get("pitch_hz", 0.0)
    if pitch > 0:
        start, end = span.window(acoustics.get("pitch_peak_s", 0.0))
        peak = span.at(acoustics.get("pitch_peak_s", 0.0))
        if base.get("pitch_hz", 0.0) > 0:
            delta = _percent(pitch, base["pitch_hz"])
            versus = _versus(f"{abs(delta):.0f}%", delta, "above", "below", "at")
            base_hz = base["pitch_hz"]
            text = f"Pitch {versus} this speaker's call baseline ({base_hz:.0f} Hz), peaking at {peak}"
            items.append(
                (abs(delta) / SALIENCE_UNIT["pitch"], _item(start, end, "pitch", round(delta, 1), text))
            )
        else:
            text = f"Median pitch {pitch:.0f} Hz, peaking at {peak} (no call baseline for this speaker yet)"
            items.append((0.0, _item(start, end, "pitch", round(pitch, 1), text)))

    loudness = acoustics.get("loudness_db")
    if loudness is not None and loudness > -99.0:
        start, end = span.window(acoustics.get("loudness_peak_s", 0.0))
        peak = span.at(acoustics.get("loudness_peak_s", 0.0))
        if "loudness_db" in base and base["loudness_db"] > -99.0:
            delta = loudness - base["loudness_db"]
            versus = _versus(f"{abs(delta):.1f} dB", delta, "louder than", "quieter than", "as loud as")
            text = f"Voice {versus} this speaker's call baseline, loudest at {peak}"
        else:
            delta = loudness - NORM_LOUDNESS_DBFS
            text = (
                f"Level {loudness:.1f} dBFS, {abs(delta):.1f} dB {_direction(delta, 'above', 'below')} a "
                f"typical speech level, loudest at {peak} "
                "(no call baseline; absolute levels depend on the line)"
            )
        items.append(
            (abs(delta) / SALIENCE_UNIT["loudness"], _item(start, end, "loudness", round(delta, 1), text))
        )

    rate = acoustics.get("rate_per_s", 0.0)
    if rate > 0:
        reference = base.get("rate_per_s", 0.0)
        own = reference > 0
        delta = _percent(rate, reference if own else NORM_RATE_PER_S)
        against = "this speaker's call baseline" if own else "a typical 4 per second (no call baseline)"
        versus = _versus(f"{abs(delta):.0f}%", delta, "faster than", "slower than", "the same as")
        text = f"Speech rate {rate:.1f} syllables/s over {span.label()}, {versus} {against}"
        items.append(
            (
                abs(delta) / SALIENCE_UNIT["speech_rate"],
                _item(span.start_s, span.end_s, "speech_rate", round(delta, 1), text),
            )
        )

    spread = acoustics.get("pitch_range_st", 0.0)
    if pitch > 0 and spread > 0:
        reference = base.get("pitch_range_st", 0.0)
        own = reference > 0
        delta = spread - (reference if own else NORM_PITCH_RANGE_ST)
        against = (
            f"this speaker's {reference:.1f}"
            if own
            else f"a typical {NORM_PITCH_RANGE_ST:.0f} (no call baseline)"
        )
        text = (
            f"{_direction(delta, 'More animated', 'Flatter')} intonation: pitch range {spread:.1f} semitones "
            f"over {span.label()} vs {against}"
        )
        items.append(
            (
                abs(delta) / SALIENCE_UNIT["pitch_range"],
                _item(span.start_s, span.end_s, "pitch_range", round(spread, 1), text),
            )
        )

    items.sort(key=lambda pair: -pair[0])
    return [item for _, item in items]


def classifier_evidence(
    canonical_scores: dict[str, float], raw_label: str, span: Span, source: str = "Voice classifier"
) -> Evidence:
    ranked = sorted(canonical_scores.items(), key=lambda kv: -kv[1])
    top, top_p = ranked[0]
    raw_note = f" (raw: {raw_label})" if raw_label and raw_label != top else ""
    text = f"{source}: {top} {top_p:.2f}{raw_note}"
    if len(ranked) > 1:
        text += f", next {ranked[1][0]} {ranked[1][1]:.2f}"
    text += f" over {span.label()}"
    return _item(span.start_s, span.end_s, "classifier", round(top_p, 3), text)


def build_evidence(
    acoustics: Acoustics,
    baseline: Acoustics | None,
    start_s: float,
    end_s: float,
    canonical_scores: dict[str, float],
    raw_label: str,
) -> list[Evidence]:
    """Classifier item first (spans the segment), then prosodic cues, strongest first."""
    span = Span(float(start_s), float(max(end_s, start_s)))
    return [
        classifier_evidence(canonical_scores, raw_label, span),
        *prosody_evidence(acoustics, baseline, span),
    ]


def _claim(item: Evidence) -> str:
    """An evidence sentence shortened for the summary, with its time if it does not have one."""
    text = item["text"].split(" (no call baseline")[0]
    text = text[0].lower() + text[1:]
    if not _TIME.search(text):  # every claim in the summary carries a time
        text += f" at {format_time(item['start_s'])}"
    return text


def reasoning_text(
    label: str, confidence: float, evidence: list[Evidence], start_s: float, end_s: float, max_cues: int = 2
) -> str:
    """One or two sentences: the label with its time span, then the strongest timed cues."""
    span = Span(start_s, max(end_s, start_s))
    first = f"Labelled {label} ({confidence:.2f}) for {span.label()}."
    cues = [e for e in evidence if e["cue"] != "classifier"][:max_cues]
    if not cues:
        return first
    norms = any("no call baseline" in e["text"] for e in cues)
    qualifier = " (vs typical norms: no call baseline for this speaker yet)" if norms else ""
    return f"{first} Main cues{qualifier}: {'; '.join(_claim(e) for e in cues)}."


# --- Words, faces and the supervisor's summary (multimodal fusion, worker/pipeline/fusion.py) ---

_PUNCTUATION = ",.;:!?\"'()"
# How a contact-center reader would call each label; neutral needs no gloss.
GLOSS = {"angry": "frustration-like", "sad": "disappointment-like", "fear": "anxiety-like",
         "disgust": "annoyance-like", "happy": "satisfaction-like", "surprise": "surprise"}


def text_evidence(observation: Any, start_s: float, end_s: float) -> list[Evidence]:
    """The words that drove the text model's score, each with its own time (clamped inside the
    segment), after one item for the text model's answer over the segment."""
    span = Span(float(start_s), float(max(end_s, start_s)))
    label, confidence = str(observation.label), float(observation.confidence)
    items = [Evidence(start_s=span.start_s, end_s=span.end_s, modality="text", cue="text_classifier",
                      value=round(confidence, 3), label=label,
                      text=f"Words over {span.label()}: {label} {confidence:.2f}")]
    for cue in observation.cues:
        lo, hi = span.clip(float(cue.start_s), float(cue.end_s))
        items.append(Evidence(start_s=lo, end_s=hi, modality="text", cue="words",
                              value=round(float(cue.weight), 3), label=label, words=str(cue.text),
                              text=f"Words '{cue.text}' at {format_time(lo)} point to {label}"))
    return items


def lexicon_evidence(cues: Sequence[Any], start_s: float, end_s: float) -> list[Evidence]:
    """Call phrases that moved the words' answer (worker/pipeline/text/lexicon.py), each at its time; the
    summary quotes them first because they are what a supervisor would have flagged."""
    span = Span(float(start_s), float(max(end_s, start_s)))
    items = []
    for cue in sorted(cues, key=lambda c: -abs(float(c.weight)))[:4]:
        lo, hi = span.clip(float(cue.start_s), float(cue.end_s))
        items.append(Evidence(start_s=lo, end_s=hi, modality="text", cue="words",
                              value=round(float(cue.weight), 3), label=str(cue.label), words=str(cue.text),
                              text=f"Words '{cue.text}' at {format_time(lo)}: a call phrase for {cue.label}"))
    return items


def face_evidence(observations: list[Any], start_s: float, end_s: float, limit: int = 3) -> list[Evidence]:
    """One item per frame with a face (most expressive first): frame time, box, expression, score."""
    span = Span(float(start_s), float(max(end_s, start_s)))
    ranked = sorted(observations, key=lambda o: -float(o.score))[:limit]
    items = []
    for obs in ranked:
        at, _ = span.clip(float(obs.time_s), float(obs.time_s))
        x, y, w, h = (int(v) for v in obs.box)
        items.append(Evidence(start_s=at, end_s=at, modality="video", cue="face",
                              value=round(float(obs.score), 3), box=[x, y, w, h], label=str(obs.label),
                              text=f"Face at {format_time(at)} looks {obs.label} ({float(obs.score):.2f}), "
                                   f"box {w}×{h} px at ({x}, {y})"))
    return items


def _voice_phrase(evidence: list[Evidence]) -> str | None:
    """'voice 35% higher at 02:15.3, 4.1 dB louder at 02:16.0, speech 30% faster than their own
    baseline' from the prosody items; None when nothing stands out."""
    parts: list[str] = []
    own = False
    for item in evidence:
        if item["modality"] != "audio" or not isinstance(item["value"], int | float):
            continue
        cue, value = item["cue"], float(item["value"])
        has_base = "no call baseline" not in item["text"]
        at = format_time(item["start_s"] + (item["end_s"] - item["start_s"]) / 2)
        if cue == "pitch" and has_base and abs(value) >= SALIENCE_UNIT["pitch"] / 2:
            parts.append(f"voice {abs(value):.0f}% {'higher' if value > 0 else 'lower'} at {at}")
        elif cue == "loudness" and abs(value) >= SALIENCE_UNIT["loudness"] / 2:
            parts.append(f"{abs(value):.1f} dB {'louder' if value > 0 else 'quieter'} at {at}")
        elif cue == "speech_rate" and abs(value) >= SALIENCE_UNIT["speech_rate"] / 2:
            parts.append(f"speech {abs(value):.0f}% {'faster' if value > 0 else 'slower'}")
        else:
            continue
        own = own or has_base
    if not parts:
        return None
    return ", ".join(parts) + (" than their own baseline" if own else " than typical speech")


def summary(role: str, start_s: float, end_s: float, evidence: list[Evidence], label: str, confidence: float,
            uncertain: bool) -> str:
    """The segment's reasoning as a supervisor reads it, every claim tied to a time:
    "Customer, 02:14.2–02:19.8: voice 35% higher at 02:15.3, 4.1 dB louder at 02:16.0, speech 30%
    faster than their own baseline; words 'third time I call' at 02:16.4; → angry 0.71
    (frustration-like), uncertain: no"."""
    span = Span(float(start_s), float(max(end_s, start_s)))
    who = role.capitalize() if role and role != "unknown" else "Speaker"
    claims = []
    voice = _voice_phrase(evidence)
    if voice:
        claims.append(voice)
    words = [e for e in evidence if e["cue"] == "words"][:2]
    if words:
        quoted = ", ".join(f"'{str(e.get('words', '')).strip(_PUNCTUATION)}' at {format_time(e['start_s'])}"
                           for e in sorted(words, key=lambda e: e["start_s"]))
        claims.append(f"words {quoted}")
    faces = [e for e in evidence if e["cue"] == "face"][:1]
    for face in faces:
        score = float(face["value"] or 0) if not isinstance(face["value"], str) else 0.0
        claims.append(f"face {face.get('label')} {score:.2f} at {format_time(face['start_s'])}")
    if not claims:
        claims.append("no cue stands out from their own baseline")
    gloss = f" ({GLOSS[label]})" if label in GLOSS else ""
    return (f"{who}, {span.label()}: {'; '.join(claims)}; → {label} {confidence:.2f}{gloss}, "
            f"uncertain: {'yes' if uncertain else 'no'}")
