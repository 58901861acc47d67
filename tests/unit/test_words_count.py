"""Words that count (worker/pipeline/text/lexicon.py and fusion): call phrases sharpen the text model's
answer and are quoted with their times; the English text model abstains on other languages (weight
0, said in the evidence); a rare label the model is not clearly sure of is flagged uncertain with
its top two labels. The real text model runs (bundled MiniLM + MELD head)."""

from __future__ import annotations

import numpy as np
import pytest

from worker import runtime
from worker.pipeline.contracts import EmotionResult, SegmentInput, Word
from worker.pipeline.fusion import MultimodalModel
from worker.pipeline.labels import CANONICAL_LABELS
from worker.pipeline.text import lexicon


def _words(text: str, start: float = 10.0, step: float = 0.3) -> list[Word]:
    return [Word(round(start + i * step, 2), round(start + (i + 1) * step, 2), w, 0.9)
            for i, w in enumerate(text.split())]


def _scores(top: str, p: float) -> dict[str, float]:
    rest = (1 - p) / (len(CANONICAL_LABELS) - 1)
    return {label: (p if label == top else rest) for label in CANONICAL_LABELS}


class _Voice:
    """A voice backend that always hears the same thing (stands in for any audio backend)."""

    name, version = "voice", "v1"

    def __init__(self, top: str = "neutral", p: float = 0.5) -> None:
        self.top, self.p = top, p

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        return [EmotionResult(label=self.top, raw_label=self.top, scores=_scores(self.top, self.p),
                              confidence=self.p, valence=0.0, arousal=0.3) for _ in batch]


def _segment(words: list[Word], language: str | None = "en") -> SegmentInput:
    return SegmentInput(key="s", audio=np.zeros(16000, np.float32), sample_rate=16000, start_s=9.5,
                        end_s=16.0, role="customer", words=words, language=language)


@pytest.fixture(scope="module")
def model() -> MultimodalModel:
    from callpulse.settings import get_settings

    text = runtime._component("text_emotion", "cpu")
    assert text is not None
    settings = get_settings()
    return MultimodalModel(_Voice(), text=text, uncertain_below=settings.uncertain_below)


def test_lexicon_finds_phrases_negations_and_skips_unsure_words() -> None:
    cues = lexicon.find(_words("No! I want to cancel my contract! Speak to your manager, right now!"))
    assert [(c.text, c.label) for c in cues] == [
        ("cancel my contract!", "angry"), ("Speak to your manager,", "angry"), ("right now!", "angry")]
    assert cues[0].start_s == pytest.approx(11.2) and cues[0].end_s == pytest.approx(12.1)
    # "not happy" is a complaint, not joy; a word the recogniser was unsure of is never quoted.
    negated = lexicon.find(_words("I am not happy with this"))
    assert [(c.text, c.label) for c in negated] == [("happy", "angry")]
    unsure = [Word(0.0, 0.5, "furious", 0.05)]
    assert lexicon.find(unsure) == []
    assert lexicon.find(_words("Hello, I am calling about my bill for this month.")) == []


def test_angry_phrases_make_the_words_angry_and_are_quoted(model: MultimodalModel) -> None:
    furious = model.predict([_segment(_words("I want to cancel my contract. Speak to your manager, "
                                             "right now! This is outrageous, I am furious!"))])[0]
    assert furious.label == "angry" and furious.valence is not None and furious.valence < 0
    text = furious.modalities["text"]
    assert text["label"] == "angry" and text["weight"] > 0
    assert {p["label"] for p in text["phrases"]} == {"angry"}
    quoted = [e for e in furious.evidence if e["modality"] == "text" and e["cue"] == "words"]
    assert quoted[0]["label"] == "angry" and 9.5 <= quoted[0]["start_s"] <= 16.0
    assert "words '" in furious.reasoning_text and "→ angry" in furious.reasoning_text
    assert model.version.split(";")[1].endswith(f"+{lexicon.LEXICON_VERSION}")

    thankful = model.predict([_segment(_words("Oh wonderful, thank you so much! I really appreciate "
                                              "your help."))])[0]
    assert thankful.valence is not None and thankful.valence > 0 and thankful.label == "happy"


def test_text_abstains_on_words_it_cannot_read(model: MultimodalModel) -> None:
    german = model.predict([_segment(_words("Ich möchte sofort meinen Vertrag kündigen, das ist eine "
                                            "Frechheit!"), language="de")])[0]
    assert german.modalities["text"]["weight"] == 0.0 and german.modalities["text"]["label"] == "abstained"
    assert german.modalities["audio"]["weight"] == 1.0
    assert german.scores == _scores("neutral", 0.5), "the voice alone decides"
    notes = [e for e in german.evidence if e["cue"] == "text_abstained"]
    assert notes and "'de'" in notes[0]["text"] and "abstained" in notes[0]["text"]


def test_a_rare_label_not_clearly_ahead_is_uncertain_with_its_top_two() -> None:
    fearful = MultimodalModel(_Voice("fear", 0.62), uncertain_below=0.5)
    result = fearful.predict([_segment([])])[0]
    assert result.label == "fear" and result.uncertain is True
    assert "(top two: fear 0.62, " in result.reasoning_text
    sure = MultimodalModel(_Voice("fear", 0.8), uncertain_below=0.5).predict([_segment([])])[0]
    assert sure.uncertain is False
    common = MultimodalModel(_Voice("angry", 0.62), uncertain_below=0.5).predict([_segment([])])[0]
    assert common.uncertain is False
