"""Late fusion (worker/pipeline/fusion.py) and the supervisor's reasoning sentence."""

from __future__ import annotations

import numpy as np
import pytest

from worker.pipeline import reasoning
from worker.pipeline.contracts import Evidence, SegmentInput, Word
from worker.pipeline.fusion import ModalityAnswer, MultimodalModel, fuse
from worker.pipeline.labels import CANONICAL_LABELS


def _scores(top: str, p: float) -> dict[str, float]:
    rest = (1 - p) / (len(CANONICAL_LABELS) - 1)
    return {label: (p if label == top else rest) for label in CANONICAL_LABELS}


def test_agreement_never_claims_more_than_the_modalities_do() -> None:
    # Normalised log-linear pooling: two modalities saying "angry 0.6" give angry 0.6, not more.
    # Without calls labelled in every modality there is nothing to calibrate a sharper rule on.
    scores, weights = fuse([ModalityAnswer("audio", "a", "1", _scores("angry", 0.6)),
                            ModalityAnswer("text", "t", "1", _scores("angry", 0.6))])
    assert scores["angry"] == pytest.approx(0.6)
    assert sum(scores.values()) == pytest.approx(1.0) and sum(weights.values()) == pytest.approx(1.0)
    assert weights["audio"] > weights["text"]  # same confidence, higher prior


def test_an_unsure_modality_cannot_drown_a_sure_one() -> None:
    sure_voice = ModalityAnswer("audio", "a", "1", _scores("angry", 0.9))
    unsure_words = ModalityAnswer("text", "t", "1", _scores("happy", 0.2))
    scores, weights = fuse([sure_voice, unsure_words])
    assert max(scores, key=scores.__getitem__) == "angry"
    assert weights["audio"] > 0.8
    # A sure face against an unsure voice wins instead: the weights follow confidence.
    scores, _ = fuse([ModalityAnswer("audio", "a", "1", _scores("neutral", 0.3)),
                      ModalityAnswer("video", "f", "1", _scores("happy", 0.95))])
    assert max(scores, key=scores.__getitem__) == "happy"


def test_fusing_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        fuse([])


def _evidence() -> list[Evidence]:
    return [
        Evidence(start_s=134.2, end_s=139.8, modality="audio", cue="classifier", value=0.7, text="Voice …"),
        Evidence(start_s=135.0, end_s=135.5, modality="audio", cue="pitch", value=35.2,
                 text="Pitch 35% above this speaker's call baseline (180 Hz), peaking at 02:15.3"),
        Evidence(start_s=135.7, end_s=136.2, modality="audio", cue="loudness", value=4.1,
                 text="Voice 4.1 dB louder than this speaker's call baseline, loudest at 02:15.9"),
        Evidence(start_s=134.2, end_s=139.8, modality="audio", cue="speech_rate", value=30.0,
                 text="Speech rate 5.2 syllables/s over 02:14.2–02:19.8, 30% faster than this speaker's"),
        Evidence(start_s=136.4, end_s=137.3, modality="text", cue="words", value=0.21, label="angry",
                 words="third time I call", text="Words 'third time I call' at 02:16.4 point to angry"),
    ]


def test_summary_reads_like_the_issue_with_every_claim_timed() -> None:
    text = reasoning.summary("customer", 134.2, 139.8, _evidence(), "angry", 0.71, False)
    assert text == ("Customer, 02:14.2–02:19.8: voice 35% higher at 02:15.2, 4.1 dB louder at 02:16.0, "
                    "speech 30% faster than their own baseline; words 'third time I call' at 02:16.4; "
                    "→ angry 0.71 (frustration-like), uncertain: no")
    calm = reasoning.summary("unknown", 0.0, 4.0, [], "neutral", 0.42, True)
    assert calm == ("Speaker, 00:00.0–00:04.0: no cue stands out from their own baseline; → neutral 0.42, "
                    "uncertain: yes")


class _Voice:
    """A deterministic voice backend: always 'neutral 0.55' (stands in for any audio backend)."""

    name, version = "voice", "v1"

    def predict(self, batch: list[SegmentInput]):
        from worker.pipeline.contracts import EmotionResult

        return [EmotionResult(label="neutral", raw_label="neutral", scores=_scores("neutral", 0.55),
                              confidence=0.55, valence=0.0, arousal=0.3) for _ in batch]


def test_voice_only_keeps_the_voice_answer_and_flags_doubt_by_the_setting() -> None:
    segment = SegmentInput(key="1", audio=np.zeros(16000, np.float32), sample_rate=16000, start_s=1.0,
                           end_s=2.0, role="customer", words=[Word(1.1, 1.4, "hello")])
    # No text model configured: words are ignored, the voice's calibrated answer stands as is.
    sure = MultimodalModel(_Voice(), uncertain_below=0.5).predict([segment])[0]
    assert sure.scores == _scores("neutral", 0.55) and sure.uncertain is False
    assert set(sure.modalities) == {"audio"} and sure.modalities["audio"]["weight"] == 1.0
    doubtful = MultimodalModel(_Voice(), uncertain_below=0.6).predict([segment])[0]
    assert doubtful.uncertain is True
    assert doubtful.reasoning_text.endswith("uncertain: yes (top two: neutral 0.55, happy 0.07)")
    assert MultimodalModel(_Voice()).version == "v1"


def test_speaker_normalisation_can_be_switched_off_and_is_another_version() -> None:
    from worker.pipeline.voice.embedded.model import load_model

    voice = load_model()
    clip = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    on = MultimodalModel(voice)
    off = MultimodalModel(voice, speaker_normalisation=False)
    assert on.uses_speaker_reference and not off.uses_speaker_reference
    reference = on.speaker_reference([clip, clip], 16000)
    assert reference is not None and reference["n"] == 2
    assert off.speaker_reference([clip], 16000) is None
    assert off.version == f"{voice.version}(no-speaker-norm)" and on.version == voice.version
    # A backend without references (GPU ones) keeps its version and never makes one.
    assert not MultimodalModel(_Voice()).uses_speaker_reference


def test_a_component_that_cannot_load_retries_the_task_instead_of_failing_segments() -> None:
    from worker.pipeline.fusion import ComponentUnavailable, Lazy
    from worker.stages.infer import _predict_isolating_failures

    def broken() -> None:
        raise OSError("encoder files missing")

    model = MultimodalModel(_Voice(), text=Lazy("text-minilm", "text-minilm-v1+x", broken))
    with_words = SegmentInput(key="1", audio=np.zeros(16000, np.float32), sample_rate=16000, start_s=0.0,
                              end_s=1.0, role="customer", words=[Word(0.1, 0.4, "hello")])
    without = SegmentInput(key="2", audio=np.zeros(16000, np.float32), sample_rate=16000, start_s=1.0,
                           end_s=2.0, role="customer")
    # Mixed batch: the item without words alone would succeed; the task must still retry.
    with pytest.raises(ComponentUnavailable, match="encoder files missing"):
        _predict_isolating_failures(model, [with_words, without])
