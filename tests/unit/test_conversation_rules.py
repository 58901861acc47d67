"""Rule conditions on the conversation so far (silence_over, interruptions_at_least, talk_share,
sentiment_trend): parsed with precise errors, evaluated causally, so a prefix of a call fires what
the whole call fires within it (which is what makes them work during a live call)."""

from __future__ import annotations

import pytest

from worker.conversation import Turn
from worker.rules import evaluate, parse_definition
from worker.rules.conversation_rules import Context
from worker.rules.evaluate import Point
from worker.rules.language import RuleError

# Agent 0–4; 3 s of silence; customer 7–12 (upset); the agent cuts in at 11 until 14; customer
# 14–18 (calmer), agent 18.5–30, customer 31–40 (happy).
TURNS = [
    Turn(0, "agent", 0.0, 4.0),
    Turn(1, "customer", 7.0, 12.0, valence=-0.8, confidence=1.0),
    Turn(2, "agent", 11.0, 14.0),
    Turn(3, "customer", 14.0, 18.0, valence=-0.2, confidence=1.0),
    Turn(4, "agent", 18.5, 30.0),
    Turn(5, "customer", 31.0, 40.0, valence=0.8, confidence=1.0),
]


def _points(turns: list[Turn]) -> list[Point]:
    """The trajectory: customer turns are the predicted ones; agent turns only feed the context."""
    context = Context(turns)
    return [Point(index=t.index, role=t.role, start_s=t.start_s, end_s=t.end_s, label="neutral",
                  scores={"neutral": 1.0}, valence=t.valence, arousal=0.5, confidence=1.0, context=context)
            for t in turns if t.role == "customer"]


def _fired(definition: dict, turns: list[Turn] = TURNS) -> list[tuple[float, str]]:
    firings = evaluate(parse_definition(definition), _points(turns))
    return [(f.fired_at_s, f.evidence[0]["text"]) for f in firings]


def test_silence_over() -> None:
    assert _fired({"when": {"silence_over": {"seconds": 2.5}}}) == [(12.0, "3.0 s of silence from 4.0 s")]
    assert _fired({"when": {"silence_over": {"seconds": 3.5}}}) == []


def test_interruptions_at_least_counts_the_named_interrupters() -> None:
    # The agent's cut-in at 11 s is known once both turns ended (14 s): the next point fires.
    assert _fired({"when": {"interruptions_at_least": {"count": 1}}, "roles": ["agent"]}) == [
        (18.0, "1 interruption(s) so far")]
    assert _fired({"when": {"interruptions_at_least": {"count": 1}}, "roles": ["customer"]}) == []


def test_talk_share_is_judged_after_its_start_time() -> None:
    # Customer talk by 18 s: 5 + 4 = 9 s (0.5 of the call); by 40 s: 18 s (0.45).
    assert _fired({"when": {"talk_share": {"min": 0.4, "after_s": 15}}, "roles": ["customer"]}) == [
        (18.0, "talk share 0.50 over the first 18 s")]
    assert _fired({"when": {"talk_share": {"max": 0.3}}, "roles": ["customer"]}) == []  # not before 60 s


def test_sentiment_trend_rise() -> None:
    # By 18 s the customer went from -4 (first quarter of the call so far) to -1: a rise of 3.
    assert [at for at, _ in _fired({"when": {"sentiment_trend": {"rise": 3}}})] == [18.0]
    fired = _fired({"when": {"sentiment_trend": {"rise": 5}}})
    assert [at for at, _ in fired] == [40.0]
    assert "+8.00" in fired[0][1]  # -4 in the first quarter, +4 in the last
    assert _fired({"when": {"sentiment_trend": {"drop": 1}}}) == []


def test_a_prefix_fires_what_the_whole_call_fires_within_it() -> None:
    definition = {"when": {"any": [{"silence_over": {"seconds": 2}}, {"interruptions_at_least": {"count": 1}},
                                   {"sentiment_trend": {"rise": 3}}]}}
    whole = _fired(definition)
    for cut in range(1, len(TURNS)):
        prefix = TURNS[:cut]
        assert _fired(definition, prefix) == [f for f in whole if f[0] <= max(t.end_s for t in prefix)]


@pytest.mark.parametrize(("when", "where", "message"), [
    ({"silence_over": {}}, "when.silence_over.seconds", "must be a number"),
    ({"talk_share": {"min": 0.2, "max": 0.5}}, "when.talk_share", "exactly one of"),
    ({"sentiment_trend": {"drop": 20}}, "when.sentiment_trend.drop", "from 0.0 to 10.0"),
    ({"interruptions_at_least": {"count": 2, "within_s": 4}}, "when.interruptions_at_least", "unknown key"),
])
def test_bad_conversation_conditions_say_where_and_why(when: dict, where: str, message: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_definition({"when": when})
    [(path, text)] = err.value.problems
    assert ".".join(str(p) for p in path) == where and message in text
