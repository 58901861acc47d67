"""R1-Omni-style output parsing on real-looking generations (no model needed)."""

from __future__ import annotations

import pytest

from worker.pipeline.voice.generative.answer_parsing import UNKNOWN, label_from_text, parse_generation

GOOD = (
    "<think>The speaker's voice rises sharply and the pace quickens; she repeats that the refund was "
    "promised twice. The clipped delivery and raised loudness point to anger rather than sadness."
    "</think>\n<answer>angry</answer>"
)


def test_well_formed_generation() -> None:
    parsed = parse_generation(GOOD)
    assert parsed.label == "angry" and parsed.well_formed
    assert parsed.think.startswith("The speaker's voice rises") and "<" not in parsed.think
    assert parsed.raw_label == "angry"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        # Case, punctuation, prose and markdown around the answer.
        ("<think>Calm, even tone.</think><answer> Neutral. </answer>", "neutral"),
        ("<think>x</think><answer>The emotion is: **Happy**!</answer>", "happy"),
        ("<think>x</think>\n<answer>\nSAD\n</answer><|im_end|>", "sad"),
        # Synonyms and non-canonical labels.
        ("<think>He keeps interrupting.</think><answer>frustrated</answer>", "angry"),
        ("<think>x</think><answer>annoyed</answer>", "angry"),
        ("<think>x</think><answer>surprised</answer>", "surprise"),
        ("<think>x</think><answer>fearful</answer>", "fear"),
        ("<think>x</think><answer>anxious</answer>", "anxiety"),
        ("<think>x</think><answer>disgusted</answer>", "disgust"),
        # Negation: the first emotion the answer does not deny.
        ("<think>x</think><answer>not happy, rather sad</answer>", "sad"),
        # Chinese answers.
        ("<think>语气急促，音量升高。</think><answer>愤怒</answer>", "angry"),
        ("<think>x</think><answer>生气</answer>", "angry"),
        ("<think>x</think><answer>高兴</answer>", "happy"),
        ("<think>x</think><answer>开心。</answer>", "happy"),
        ("<think>x</think><answer>她很伤心</answer>", "sad"),
        ("<think>x</think><answer>不高兴</answer>", "sad"),
        ("<think>x</think><answer>中性</answer>", "neutral"),
        ("<think>x</think><answer>平静</answer>", "neutral"),
        ("<think>x</think><answer>惊讶</answer>", "surprise"),
        ("<think>x</think><answer>害怕</answer>", "fear"),
        ("<think>x</think><answer>恐惧</answer>", "fear"),
        ("<think>x</think><answer>厌恶</answer>", "disgust"),
    ],
)
def test_answers_map_onto_canonical_labels(text: str, label: str) -> None:
    assert parse_generation(text).label == label


def test_missing_tags_and_extra_text() -> None:
    # No tags at all: a bare answer.
    assert parse_generation("Angry.").label == "angry"
    # Answer tag without think.
    parsed = parse_generation("<answer>happy</answer>")
    assert parsed.label == "happy" and parsed.think == "" and not parsed.well_formed
    # Lost opening think tag, answer after the closing one, chatter afterwards.
    parsed = parse_generation("The caller sighs often.</think> <answer>sad</answer> Hope this helps!")
    assert parsed.label == "sad" and parsed.think == "The caller sighs often." and parsed.well_formed
    # No answer tag: the text after </think> is the answer.
    parsed = parse_generation("<think>Loud and fast.</think> Final answer: angry")
    assert parsed.label == "angry" and parsed.think == "Loud and fast." and not parsed.well_formed
    # Doubled tags: the last answer wins (models sometimes restate).
    assert parse_generation("<think>a</think><answer>sad</answer><answer>fear</answer>").label == "fear"


def test_truncated_generations() -> None:
    # Cut off inside the answer: the partial answer is still read.
    parsed = parse_generation("<think>Voice trembles, speech is hesitant.</think><answer>fea")
    assert parsed.label is None or parsed.label == "fear"
    parsed = parse_generation("<think>Voice trembles.</think><answer>fearful")
    assert parsed.label == "fear" and not parsed.well_formed
    # Cut off inside the think, which concluded before running out of tokens.
    parsed = parse_generation("<think>Pitch rises and the words come fast. Overall the caller sounds angry.")
    assert parsed.label == "angry" and parsed.think.endswith("sounds angry.")
    # Cut off mid-reasoning with no conclusion: no label, reasoning kept.
    parsed = parse_generation("<think>The speaker begins by explaining the billing iss")
    assert parsed.label is None and parsed.raw_label == UNKNOWN
    assert parsed.think.startswith("The speaker begins")
    # Think closed by the answer tag only.
    parsed = parse_generation("<think>Soft voice<answer>sad</answer>")
    assert parsed.label == "sad" and parsed.think == "Soft voice"


def test_failures_record_unknown() -> None:
    for text in ["", "<|im_end|>", "<think></think><answer></answer>", "<answer>banana</answer>",
                 "I cannot determine the emotion from this clip."]:
        parsed = parse_generation(text)
        assert parsed.label is None and parsed.raw_label == UNKNOWN, text


def test_label_from_text_prefers_exact_vocabulary() -> None:
    assert label_from_text("Happiness") == "happy"
    assert label_from_text("“calm”") == "neutral"
    assert label_from_text("emotion: 失望") == "disappointment"
    assert label_from_text("banana") is None
