"""The rule language and its pure evaluator: every condition kind, episodes and cooldown, the
prefix property live evaluation relies on, and precise validation errors."""

from __future__ import annotations

import pytest

from worker.rules import Point, RuleError, evaluate, parse_definition, parse_text


def pt(i: int, label: str = "neutral", p: float = 0.9, valence: float = 0.0, role: str = "customer",
       text: str | None = None, arousal: float = 0.5) -> Point:
    scores = {"neutral": 0.0, "angry": 0.0, label: p}
    return Point(index=i, role=role, start_s=5.0 * i, end_s=5.0 * i + 4.5, label=label, scores=scores,
                 valence=valence, arousal=arousal, confidence=p, text=text)


def keys(definition: dict, trajectory: list[Point]) -> list[str]:
    return [f.window_key for f in evaluate(parse_definition(definition), trajectory)]


CALL = [pt(0), pt(1, "angry", 0.8, -0.6), pt(2, "angry", 0.7, -0.7), pt(3, "angry", 0.9, -0.8),
        pt(4, role="agent"), pt(5), pt(6, "angry", 0.9, -0.5), pt(7, "angry", 0.95, -0.9)]


def test_label_and_probability_fire_once_per_episode() -> None:
    assert keys({"when": {"label": "angry"}}, CALL) == ["seg-1", "seg-6"]
    # The agent's segment 4 does not end the customer's episode: only the customer is looked at …
    assert keys({"roles": ["customer"], "when": {"label": "angry"}}, CALL) == ["seg-1", "seg-6"]
    assert keys({"when": {"probability": {"label": "angry", "min": 0.85}}}, CALL) == ["seg-3", "seg-6"]
    assert keys({"when": {"label": ["sad", "fear"]}}, CALL) == []


def test_valence_arousal_confidence_thresholds() -> None:
    assert keys({"when": {"valence": {"max": -0.75}}}, CALL) == ["seg-3", "seg-7"]
    assert keys({"when": {"valence": {"min": -0.65, "max": -0.55}}}, CALL) == ["seg-1"]
    assert keys({"when": {"arousal": {"min": 0.9}}}, CALL) == []
    assert keys({"when": {"confidence": {"min": 0.95}}}, CALL) == ["seg-7"]


def test_sustained_by_segments_and_by_seconds() -> None:
    angry = {"label": "angry"}
    assert keys({"when": {"sustained": {"segments": 3, "condition": angry}}}, CALL) == ["seg-3"]
    # 2 segments 5 s apart span 9.5 s; seconds and segments together must both hold.
    assert keys({"when": {"sustained": {"seconds": 9.5, "condition": angry}}}, CALL) == ["seg-2", "seg-7"]
    both = {"when": {"sustained": {"seconds": 9.5, "segments": 3, "condition": angry}}}
    assert keys(both, CALL) == ["seg-3"]
    firing = evaluate(parse_definition({"when": {"sustained": {"segments": 3, "condition": angry}}}), CALL)[0]
    assert (firing.first_segment_index, firing.last_segment_index, firing.start_s) == (1, 3, 5.0)
    assert firing.evidence[0]["kind"] == "sustained"


def test_sustained_ignores_other_roles_but_breaks_on_own_role() -> None:
    call = [pt(0, "angry"), pt(1, "neutral", role="agent"), pt(2, "angry"), pt(3, "neutral"), pt(4, "angry")]
    rule = {"roles": ["customer"], "when": {"sustained": {"segments": 2, "condition": {"label": "angry"}}}}
    assert keys(rule, call) == ["seg-2"]


def test_trend_drop_and_rise_within_window() -> None:
    drop = {"when": {"trend": {"metric": "valence", "drop": 0.5, "within_s": 10}}}
    assert keys(drop, CALL) == ["seg-1", "seg-6"]
    # A window too short to see the fall from segment 5 (valence 0) to 7 (−0.9) finds only what is adjacent.
    assert keys({"when": {"trend": {"metric": "valence", "drop": 0.85, "within_s": 5}}}, CALL) == []
    rise = {"when": {"trend": {"metric": "probability.angry", "rise": 0.8, "within_s": 30}}}
    assert keys(rise, CALL) == ["seg-1", "seg-3", "seg-6"]
    firing = evaluate(parse_definition(drop), CALL)[0]
    assert firing.evidence[0]["kind"] == "trend" and firing.first_segment_index == 0


def test_words_use_transcript_text_and_are_false_without_it() -> None:
    words = {"when": {"words": {"any": ["cancel my contract", "lawyer"]}}}
    assert keys(words, CALL) == []  # no transcripts: simply false, never an error
    call = [pt(0, text="hello there"), pt(1, text="I want to CANCEL  my contract now"),
            pt(2, text="lawyers everywhere"), pt(3, text="my lawyer")]
    assert keys(words, call) == ["seg-1", "seg-3"]  # whole words: "lawyers" is not "lawyer"
    assert keys({"when": {"words": {"all": ["my", "now"]}}}, call) == ["seg-1"]
    assert keys({"when": {"not": {"words": {"any": ["lawyer"]}}}}, call) == ["seg-0"]


def test_all_any_not_and_role_filters_combine() -> None:
    call = [pt(0, "angry", role="customer"), pt(1, "angry", role="agent"), pt(2, "neutral", role="customer"),
            pt(3, "angry", role="agent")]
    both = {"when": {"all": [{"label": "angry", "role": "customer"}, {"label": "angry", "role": "agent"}]}}
    assert keys(both, call) == ["seg-1"]  # each side's latest segment: the customer is still angry
    either = {"when": {"any": [{"label": "angry", "role": "customer"}, {"valence": {"max": -2 + 1.5}}]}}
    assert keys(either, call) == ["seg-0"]
    assert keys({"when": {"not": {"label": "angry"}}}, call) == ["seg-2"]
    firing = evaluate(parse_definition(both), call)[0]
    assert {e["role"] for e in firing.evidence} == {"customer", "agent"}
    assert [e["condition"] for e in firing.evidence] == ["when.all[0]", "when.all[1]"]


def test_cooldown_silences_episodes_that_begin_too_soon() -> None:
    flicker = [pt(i, "angry" if i % 2 == 0 else "neutral") for i in range(10)]  # rises at 0, 2, 4, 6, 8
    assert keys({"when": {"label": "angry"}}, flicker) == ["seg-0", "seg-2", "seg-4", "seg-6", "seg-8"]
    assert keys({"cooldown_s": 15, "when": {"label": "angry"}}, flicker) == ["seg-0", "seg-4", "seg-8"]


def test_every_prefix_fires_a_prefix_of_the_final_episodes() -> None:
    """What makes incremental evaluation exactly-once with the (rule, recording, window) key."""
    rules = [
        {"when": {"sustained": {"segments": 2, "condition": {"label": "angry"}}}},
        {"cooldown_s": 12, "when": {"trend": {"metric": "valence", "drop": 0.3, "within_s": 20}}},
        {"when": {"any": [{"not": {"label": "angry"}}, {"valence": {"max": -0.8}}]}},
    ]
    for rule in rules:
        final = evaluate(parse_definition(rule), CALL)
        for k in range(len(CALL) + 1):
            partial = evaluate(parse_definition(rule), CALL[:k])
            assert partial == [f for f in final if f.last_segment_index < k]


@pytest.mark.parametrize(("definition", "path", "fragment"), [
    ({}, ("when",), "missing"),
    ({"when": {"label": "furious"}}, ("when", "label"), "unknown label"),
    ({"when": {"label": "angry", "valence": {"max": 0}}}, ("when",), "exactly one"),
    ({"when": {"valence": {"min": 0.5, "max": 0.1}}}, ("when", "valence"), "greater than max"),
    ({"when": {"valence": {"max": 3}}}, ("when", "valence", "max"), "between"),
    ({"when": {"sustained": {"condition": {"label": "angry"}}}}, ("when", "sustained"), "seconds"),
    ({"when": {"trend": {"metric": "pitch", "drop": 1, "within_s": 5}}}, ("when", "trend", "metric"),
     "valence"),
    ({"when": {"trend": {"metric": "valence", "drop": 1, "rise": 1, "within_s": 5}}}, ("when", "trend"),
     "exactly one"),
    ({"when": {"all": []}}, ("when", "all"), "list of 1"),
    ({"when": {"words": {"any": [""]}}}, ("when", "words", "any"), "non-empty"),
    ({"when": {"label": "angry", "role": "Customer!"}}, ("when", "role"), "invalid role"),
    ({"severity": "urgent", "when": {"label": "angry"}}, ("severity",), "one of"),
    ({"cooldown_s": -1, "when": {"label": "angry"}}, ("cooldown_s",), "between"),
    ({"when": {"label": "angry"}, "colour": 1}, ("colour",), "unknown key"),
])
def test_invalid_definitions_name_the_problem_and_its_path(definition: dict, path: tuple, fragment: str
                                                          ) -> None:
    with pytest.raises(RuleError) as info:
        parse_definition(definition)
    assert any(p == path and fragment in msg for p, msg in info.value.problems), info.value.problems


def test_yaml_and_json_texts_parse_to_the_same_definition() -> None:
    yaml_text = "severity: high\nwhen:\n  sustained:\n    segments: 2\n    condition: {label: angry}\n"
    json_text = ('{"severity": "high", "when": {"sustained": {"segments": 2, '
                 '"condition": {"label": "angry"}}}}')
    from_yaml = parse_definition(parse_text(yaml_text, "application/yaml"))
    assert from_yaml == parse_definition(parse_text(json_text))
    with pytest.raises(RuleError):
        parse_text("when: [unclosed", "application/yaml")
