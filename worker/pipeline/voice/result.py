"""From a backend's raw class probabilities to the contract's EmotionResult (shared by backends)."""

from __future__ import annotations

from worker.pipeline import labels, reasoning
from worker.pipeline.contracts import EmotionResult, SegmentInput
from worker.pipeline.speech import prosody


def result_from_raw(segment: SegmentInput, raw: dict[str, float], raw_mass_confidence: bool = False) -> (
    EmotionResult
):
    """Canonical scores, label, valence/arousal, prosody evidence and the reasoning text.

    ``raw_mass_confidence``: confidence is the raw probability behind the chosen label rather than
    its renormalised canonical score, so mass a checkpoint parks on classes we cannot map ("other")
    lowers confidence instead of being renormalised into certainty."""
    raw_label = max(raw, key=raw.__getitem__)
    scores = labels.to_canonical_scores(raw)
    label = max(scores, key=scores.__getitem__)
    if raw_mass_confidence:
        confidence = sum(p for cls, p in raw.items() if labels.canonical(cls) == label)
    else:
        confidence = scores[label]
    valence, arousal = labels.valence_arousal(raw)
    acoustics = segment.acoustics or prosody.measure(segment.audio, segment.sample_rate)
    end_s = max(segment.end_s, segment.start_s)
    evidence = reasoning.build_evidence(acoustics, segment.baseline or None, segment.start_s, end_s, scores,
                                        raw_label)
    return EmotionResult(
        label=label,
        raw_label=raw_label,
        scores=scores,
        confidence=float(confidence),
        valence=valence,
        arousal=arousal,
        evidence=evidence,
        reasoning_text=reasoning.reasoning_text(label, confidence, evidence, segment.start_s, end_s),
    )
