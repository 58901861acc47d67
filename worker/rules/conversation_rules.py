"""Rule conditions on the conversation so far: `silence_over`, `interruptions_at_least`,
`talk_share` and `sentiment_trend`.

They read what worker/conversation.py measures, but causally: at each predicted segment of the
trajectory, only the turns (of every role, analyzed or not) that ended by then count, so a rule
fires during a live call at the moment its condition became true, and evaluating a prefix fires
what evaluating the whole call fires within it. Parsing lives here too, so the core language
stays about emotions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.conversation import MIN_OVERLAP_S, SENTIMENT_ROLE, Turn, sentiment

KEYS = ("silence_over", "interruptions_at_least", "talk_share", "sentiment_trend")
# A share of talk over the first seconds of a call means nothing: by default it is judged from here.
TALK_SHARE_AFTER_S = 60.0


@dataclass(frozen=True)
class SoFar:
    """The conversation up to one point of the trajectory."""

    silence_before_s: float  # quiet (nobody speaking) right before this segment started
    silence_start_s: float
    interruptions: Mapping[str, int]  # per interrupting role
    talk_s: Mapping[str, float]  # per role, union of its turns
    elapsed_s: float
    sentiment_trend: float | None  # the customer's, last quarter of the call so far minus the first


@dataclass(frozen=True)
class ConversationCondition:
    key: str
    value: float  # seconds, count, share or sentiment points
    bound: str  # "min" | "max" (talk_share), "drop" | "rise" (sentiment_trend), "min" otherwise
    after_s: float
    roles: frozenset[str] | None


class Context:
    """A call's turns, shared by every point of its trajectory; `at` measures the conversation up
    to one point, only when a rule asks (most rules never do)."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = sorted(turns, key=lambda t: (t.start_s, t.index))
        self._cache: dict[int, SoFar] = {}
        # Each interruption with the moment it is known: when both of its turns have ended.
        self._interruptions: list[tuple[float, str]] | None = None

    def interruptions(self) -> list[tuple[float, str]]:
        if self._interruptions is None:
            found = []
            for i, turn in enumerate(self.turns):
                for earlier in self.turns[:i]:
                    if (earlier.role != turn.role and earlier.start_s < turn.start_s < earlier.end_s
                            and min(earlier.end_s, turn.end_s) - turn.start_s >= MIN_OVERLAP_S):
                        found.append((max(earlier.end_s, turn.end_s), turn.role))
            self._interruptions = found
        return self._interruptions

    def at(self, point_index: int, point_start: float, point_end: float) -> SoFar:
        if point_index not in self._cache:
            self._cache[point_index] = self._measure(point_index, point_start, point_end)
        return self._cache[point_index]

    def _measure(self, point_index: int, point_start: float, point_end: float) -> SoFar:
        done = [t for t in self.turns if t.end_s <= point_end + 1e-9]
        before = [t for t in done if t.index != point_index and t.start_s < point_start]
        covered = any(t.end_s > point_start for t in before)
        last_end = max((t.end_s for t in before), default=0.0)
        interruptions: dict[str, int] = {}
        for known_at, role in self.interruptions():
            if known_at <= point_end + 1e-9:
                interruptions[role] = interruptions.get(role, 0) + 1
        talk: dict[str, float] = {}
        for role in {t.role for t in done}:
            spans = sorted((t.start_s, t.end_s) for t in done if t.role == role)
            total, cur_a, cur_b = 0.0, spans[0][0], spans[0][1]
            for a, b in spans[1:]:
                if a <= cur_b:
                    cur_b = max(cur_b, b)
                else:
                    total, cur_a, cur_b = total + cur_b - cur_a, a, b
            talk[role] = total + cur_b - cur_a
        return SoFar(silence_before_s=0.0 if covered else max(0.0, point_start - last_end),
                     silence_start_s=last_end, interruptions=interruptions, talk_s=talk,
                     elapsed_s=point_end, sentiment_trend=sentiment(done, point_end)["trend"])


def holds(spec: ConversationCondition, now: SoFar | None) -> tuple[bool, str]:
    """Whether the condition holds at this point, and the evidence sentence when it does."""
    if now is None:  # a trajectory built without its call's turns
        return False, ""
    if spec.key == "silence_over":
        ok = now.silence_before_s > spec.value
        return ok, f"{now.silence_before_s:.1f} s of silence from {now.silence_start_s:.1f} s"
    if spec.key == "interruptions_at_least":
        count = sum(n for role, n in now.interruptions.items() if spec.roles is None or role in spec.roles)
        return count >= spec.value, f"{count} interruption(s) so far"
    if spec.key == "talk_share":
        if now.elapsed_s < spec.after_s or now.elapsed_s <= 0:
            return False, ""
        talk = sum(s for role, s in now.talk_s.items() if spec.roles is None or role in spec.roles)
        share = talk / now.elapsed_s
        ok = share >= spec.value if spec.bound == "min" else share <= spec.value
        return ok, f"talk share {share:.2f} over the first {now.elapsed_s:.0f} s"
    trend = now.sentiment_trend
    if trend is None:
        return False, ""
    ok = trend <= -spec.value if spec.bound == "drop" else trend >= spec.value
    return ok, f"{SENTIMENT_ROLE} sentiment trend {trend:+.2f} (−5..+5 scale)"


def parse(key: str, body: Any, path: tuple[str | int, ...], roles: frozenset[str] | None,
          problems: list[tuple[tuple[str | int, ...], str]]) -> ConversationCondition | None:
    def number(name: str, low: float, high: float) -> float | None:
        value = body.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            problems.append(((*path, name), f"must be a number from {low} to {high}"))
            return None
        return float(value)

    if not isinstance(body, Mapping):
        problems.append((path, _USAGE[key]))
        return None
    allowed = {"silence_over": {"seconds"}, "interruptions_at_least": {"count"},
               "talk_share": {"min", "max", "after_s"}, "sentiment_trend": {"drop", "rise"}}[key]
    extra = sorted(str(k) for k in body if k not in allowed)
    if extra:
        problems.append((path, f"unknown key(s) {extra}; {_USAGE[key]}"))
        return None
    if key == "silence_over":
        value = number("seconds", 0.0, 24 * 3600.0)
        return ConversationCondition(key, value, "min", 0.0, roles) if value is not None else None
    if key == "interruptions_at_least":
        value = number("count", 1, 10_000)
        return ConversationCondition(key, value, "min", 0.0, roles) if value is not None else None
    bounds = [b for b in (("min", "max") if key == "talk_share" else ("drop", "rise")) if b in body]
    if len(bounds) != 1:
        problems.append((path, _USAGE[key]))
        return None
    value = number(bounds[0], 0.0, 1.0 if key == "talk_share" else 10.0)
    after = number("after_s", 0.0, 24 * 3600.0) if "after_s" in body else TALK_SHARE_AFTER_S
    if value is None or after is None:
        return None
    return ConversationCondition(key, value, bounds[0], after, roles)


_USAGE = {
    "silence_over": "silence_over needs {seconds: N}: a silence longer than N seconds",
    "interruptions_at_least": "interruptions_at_least needs {count: N} (the roles filter names the "
                              "interrupters)",
    "talk_share": "talk_share needs exactly one of {min: S} or {max: S} (0..1, the roles' share of the "
                  "call so far) and optionally after_s (default 60)",
    "sentiment_trend": "sentiment_trend needs exactly one of {drop: N} or {rise: N} (points on the "
                       "-5..+5 customer sentiment, last quarter of the call so far against the first)",
}
