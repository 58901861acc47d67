"""The shipped embedded emotion model, loaded exactly as workers load it (load_backend).

Real speech comes from the example call shipped in callpulse/examples/ (RAVDESS/EmoDB clips may
not be redistributed, so none are copied here). Synthetic signals are used only for robustness:
silence, a 0.2 s clip, hard clipping, noise, odd sample rates.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from worker.pipeline import labels, reasoning
from worker.pipeline.contracts import Acoustics, EmotionResult, SegmentInput
from worker.pipeline.speech import prosody
from worker.pipeline.voice.embedded import classifier as ser_classifier
from worker.pipeline.voice.registry import CANONICAL_LABELS, BackendUnavailable, load_backend

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "callpulse" / "examples"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
TIME = re.compile(r"\d\d:\d\d\.\d")


@pytest.fixture(scope="module")
def model():
    return load_backend("embedded", None, "cpu", "auto")


def _tone(f0: float, seconds: float, rate: int = 16_000, level: float = 0.3) -> np.ndarray:
    """A voiced-like harmonic signal with a slow pitch glide and syllable-rate amplitude bumps."""
    t = np.arange(int(seconds * rate)) / rate
    glide = f0 * (1.0 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(glide) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (level * voice * envelope / 2.0).astype(np.float32)


def _segment(audio: np.ndarray, rate: int, start_s: float, key: str = "s", baseline=None) -> SegmentInput:
    return SegmentInput(
        key=key,
        audio=audio,
        sample_rate=rate,
        start_s=start_s,
        end_s=start_s + audio.size / rate,
        role="customer",
        baseline=baseline,
    )


def _assert_valid(result: EmotionResult, segment: SegmentInput) -> None:
    assert set(result.scores) == set(CANONICAL_LABELS)
    assert math.isclose(sum(result.scores.values()), 1.0, abs_tol=1e-6)
    assert all(0.0 <= p <= 1.0 for p in result.scores.values())
    assert result.label in CANONICAL_LABELS
    assert result.label == max(result.scores, key=result.scores.__getitem__)
    assert result.raw_label
    assert 0.0 < result.confidence <= 1.0
    assert result.valence is not None and -1.0 <= result.valence <= 1.0
    assert result.arousal is not None and 0.0 <= result.arousal <= 1.0
    assert result.evidence and result.evidence[0]["cue"] == "classifier"
    for item in result.evidence:
        assert segment.start_s <= item["start_s"] <= item["end_s"] <= segment.end_s, item
        assert item["modality"] == "audio" and item["text"]
        assert item["value"] is None or isinstance(item["value"], str) or math.isfinite(item["value"])
    assert TIME.search(result.reasoning_text)
    json.dumps([dict(e) for e in result.evidence])  # storable as JSON


def test_canonical_folding_and_affect() -> None:
    raw = {"calm": 0.2, "neutral": 0.1, "boredom": 0.1, "angry": 0.4, "fearful": 0.1, "surprised": 0.1}
    scores = labels.to_canonical_scores(raw)
    assert set(scores) == set(CANONICAL_LABELS)
    assert math.isclose(sum(scores.values()), 1.0)
    assert math.isclose(scores["neutral"], 0.4) and math.isclose(scores["fear"], 0.1)
    assert math.isclose(scores["surprise"], 0.1)
    assert labels.to_canonical_scores({"unknown": 1.0})["neutral"] == 1.0
    valence, arousal = labels.valence_arousal({"angry": 1.0})
    assert (valence, arousal) == labels.AFFECT["angry"]
    # Corpus spellings fall back to their canonical twin's coordinates.
    assert labels.valence_arousal({"fearful": 1.0}) == labels.AFFECT["fear"]
    valence, arousal = labels.valence_arousal({"happy": 0.5, "sad": 0.5})
    assert math.isclose(valence, 0.05) and math.isclose(arousal, 0.45)


def test_prosody_is_finite_and_tracks_pitch() -> None:
    tone = prosody.measure(_tone(150.0, 2.0), 16_000)
    assert abs(tone["pitch_hz"] - 150.0) / 150.0 < 0.1
    assert tone["voiced_ratio"] > 0.5 and tone["loudness_db"] > -30.0
    for audio, rate in [
        (np.zeros(16_000, np.float32), 16_000),
        (np.zeros(0, np.float32), 16_000),
        (np.zeros(5, np.float32), 8_000),
        (np.clip(_tone(220.0, 0.2) * 20, -1, 1), 16_000),
        (np.full(4000, np.nan, np.float32), 16_000),
        (_tone(120.0, 1.0, rate=44_100), 44_100),
    ]:
        acoustics = prosody.measure(audio, rate)
        assert set(acoustics) == {
            "pitch_hz",
            "pitch_range_st",
            "loudness_db",
            "rate_per_s",
            "voiced_ratio",
            "pitch_peak_s",
            "loudness_peak_s",
        }
        assert all(isinstance(v, float) and math.isfinite(v) for v in acoustics.values()), acoustics
    json.dumps(tone)


def test_prosody_baseline_ignores_unvoiced_and_silent_segments() -> None:
    voiced = [prosody.measure(_tone(f, 1.0), 16_000) for f in (100.0, 120.0, 140.0)]
    silent = prosody.measure(np.zeros(16_000, np.float32), 16_000)
    base = prosody.baseline([*voiced, silent])
    assert abs(base["pitch_hz"] - 120.0) < 10.0
    assert base["loudness_db"] > -60.0
    assert "pitch_peak_s" not in base
    assert prosody.baseline([]) == {}


def test_registry_and_version(model) -> None:
    assert model.name == "embedded"
    assert re.fullmatch(r"ser-v2\+[0-9a-f]{8}", model.version)
    again = load_backend("embedded", REPO / "worker" / "weights", "cpu", "float32")
    assert again.version == model.version
    metadata = json.loads((REPO / "worker" / "weights" / ser_classifier.METADATA_FILE).read_text())
    assert metadata["version"] == model.version
    assert (REPO / "worker" / "weights" / ser_classifier.WEIGHTS_FILE).stat().st_size < 2 * 1024 * 1024
    assert set(metadata["temperatures"]) == {"speaker", "plain"}
    assert all(0.2 < t < 6.0 for t in metadata["temperatures"].values())
    assert metadata["temperature"] == metadata["temperatures"]["speaker"]
    for backend in ("audio-classifier", "omni", "r1-omni"):
        with pytest.raises(BackendUnavailable, match=r"\[gpu\]"):
            load_backend(backend, None, "cuda", "auto")
    with pytest.raises(BackendUnavailable):
        load_backend("nope", None, "cpu", "auto")


def test_predict_survives_degenerate_audio(model) -> None:
    rng = np.random.default_rng(0)
    segments = [
        _segment(np.zeros(16_000 * 2, np.float32), 16_000, 10.0, "silence"),
        _segment(_tone(180.0, 0.2), 16_000, 61.25, "short"),
        _segment(np.clip(_tone(200.0, 1.5) * 30, -1, 1), 16_000, 125.0, "clipped"),
        _segment(rng.normal(0, 0.1, 8_000 * 3).astype(np.float32), 8_000, 3600.0, "noise-8k"),
        _segment(np.zeros(0, np.float32), 16_000, 5.0, "empty"),
    ]
    results = model.predict(segments)
    assert len(results) == len(segments)
    for segment, result in zip(segments, results, strict=True):
        _assert_valid(result, segment)
    assert model.predict([]) == []


def test_evidence_relative_to_baseline_and_norms() -> None:
    acoustics = prosody.measure(_tone(200.0, 3.0), 16_000)
    scores = dict.fromkeys(CANONICAL_LABELS, 0.0) | {"angry": 0.7, "fear": 0.2, "neutral": 0.1}
    base: Acoustics = {"pitch_hz": 150.0, "pitch_range_st": 2.0, "loudness_db": -30.0, "rate_per_s": 3.0}
    with_base = reasoning.build_evidence(acoustics, base, 41.0, 44.0, scores, "angry")
    pitch = next(e for e in with_base if e["cue"] == "pitch")
    assert isinstance(pitch["value"], float) and pitch["value"] > 20
    assert "above this speaker's call baseline" in pitch["text"]
    assert pitch["end_s"] - pitch["start_s"] <= 0.5 + 1e-9
    assert with_base[0]["text"].startswith("Voice classifier: angry 0.70, next fear 0.20")
    without = reasoning.build_evidence(acoustics, None, 41.0, 44.0, scores, "angry")
    assert all("no call baseline" in e["text"] for e in without if e["cue"] != "classifier")
    for items in (with_base, without):
        assert all(41.0 <= e["start_s"] <= e["end_s"] <= 44.0 for e in items)
    text = reasoning.reasoning_text("angry", 0.7, without, 41.0, 44.0)
    assert "00:41.0–00:44.0" in text and "norms" in text
    assert reasoning.format_time(3723.46) == "62:03.5"


def _example_audio() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


@pytest.mark.skipif(
    not _example_audio(),
    reason="no example call in callpulse/examples/ (real speech test needs "
    "it: corpus clips may not be redistributed)",
)
def test_predict_on_example_call(model) -> None:
    import soundfile

    audio, rate = soundfile.read(_example_audio()[0], dtype="float32", always_2d=True)
    mono = audio[:, -1]  # the customer channel of a stereo call (the one analysed by default)
    step = 5 * rate
    segments = [
        _segment(mono[i : i + step], rate, i / rate, key=str(i // step))
        for i in range(0, min(mono.size, 6 * step), step)
        if mono[i : i + step].size >= rate // 2
    ]
    measured = [prosody.measure(s.audio, rate) for s in segments]
    base = prosody.baseline(measured)
    for segment, acoustics in zip(segments, measured, strict=True):
        segment.baseline, segment.acoustics = base, acoustics
    results = model.predict(segments)
    for segment, result in zip(segments, results, strict=True):
        _assert_valid(result, segment)
    # Deterministic: the same audio gives the same answer, alone or in a batch (float noise only).
    alone = model.predict(segments[:1])[0].scores
    assert alone == pytest.approx(results[0].scores, abs=1e-4)


def test_speaker_reference_paths(model) -> None:
    """A reference switches to the speaker head; a missing or foreign one falls back to the plain head."""
    clips = [_tone(f, 1.2) for f in (110.0, 120.0, 130.0, 140.0, 150.0)]
    reference = model.speaker_reference(clips * 3, 16_000)  # 15 clips in, at most 12 summarised
    assert reference["n"] == 12 and len(reference["mean"]) == len(reference["std"]) == model.model.n_features
    assert json.loads(json.dumps(reference)) == reference
    assert model.speaker_reference([], 16_000)["n"] == 0
    loud = np.clip(_tone(260.0, 2.0) * 3, -1, 1)
    plain = model.predict([_segment(loud, 16_000, 0.0)])[0]
    with_ref = _segment(loud, 16_000, 0.0)
    with_ref.speaker_reference = reference
    normalised = model.predict([with_ref])[0]
    _assert_valid(normalised, with_ref)
    assert normalised.scores != pytest.approx(plain.scores, abs=1e-3)
    foreign = _segment(loud, 16_000, 0.0)
    foreign.speaker_reference = {**reference, "feature_spec": "other"}
    assert model.predict([foreign])[0].scores == pytest.approx(plain.scores, abs=1e-6)
    empty = _segment(loud, 16_000, 0.0)
    empty.speaker_reference = model.speaker_reference([], 16_000)
    assert model.predict([empty])[0].scores == pytest.approx(plain.scores, abs=1e-6)


def test_plain_verdict_on_a_baseline_counts_only_in_domain(model) -> None:
    """A baseline like the training speakers' keeps the plain head's neutral probability as the
    speaker weight; one beyond OUTLIER_Z on more features than any training speaker's call is judged
    relative to itself (speaker head), whatever the plain head says of it."""
    weights = model.model
    plain = weights.heads["plain"]
    inside = plain.mean.astype(np.float64)[None]
    assert weights.plain_trust(inside)[0] == 1.0
    assert weights.speaker_weight(inside)[0] == pytest.approx(weights.plain_neutral(inside)[0])
    outside = inside.copy()
    n_far = int(np.ceil(ser_classifier.OUTLIER_IGNORED * weights.n_features)) + 1
    # Far out on the features that most raise the plain head's "angry": the verdict would be angry.
    angry = weights.classes.index("angry")
    push = np.argsort(-plain.predict_proba(inside + np.eye(weights.n_features) * plain.scale * 5)[:, angry])
    outside[0, push[:n_far]] += 5 * plain.scale[push[:n_far]]
    assert weights.plain_neutral(outside)[0] < 0.5
    assert weights.plain_trust(outside)[0] == 0.0 and weights.speaker_weight(outside)[0] == 1.0
    x = outside + 0.1 * plain.scale
    zeros = np.zeros_like(outside)
    mixed = weights.combined(x, outside, zeros, np.array([8.0]))
    speaker_only = weights.combined(x, outside, zeros, np.array([8.0]), fixed_weight=1.0)
    assert np.allclose(mixed, speaker_only)
