"""Pure, causal evaluation of a rule over an emotion trajectory.

The trajectory is a recording's predicted segments in call order. The evaluator walks it once; at
each step (a segment) every condition has a value that depends only on the segments up to that
step. That is what makes incremental evaluation safe: evaluating a prefix of the call fires exactly
the episodes that evaluating the whole call fires within that prefix, so a task re-run on a longer
prefix (or delivered twice) finds the same episodes under the same keys and the database's unique
key (rule, recording, window_key) turns them into one alert each.

An episode begins where the rule's condition turns true and lasts while it stays true; it fires an
alert unless it begins within ``cooldown_s`` call seconds of the previous alert's firing time.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.rules.conversation_rules import Context, ConversationCondition, holds
from worker.rules.language import (
    AllOf,
    AnyOf,
    Condition,
    LabelIs,
    Not,
    Roles,
    RuleDefinition,
    Sustained,
    Threshold,
    Trend,
    Words,
)


@dataclass(frozen=True)
class Point:
    """One predicted segment of the trajectory."""

    index: int
    role: str
    start_s: float
    end_s: float
    label: str
    scores: Mapping[str, float]
    valence: float | None
    arousal: float | None
    confidence: float
    # Transcript text of the segment; None while the pipeline has no transcripts (words → false).
    text: str | None = None
    segment_id: uuid.UUID | None = None
    # Every turn of the call (analyzed or not), for conversation conditions; None: they are false.
    context: Context | None = None


@dataclass(frozen=True)
class Firing:
    window_key: str
    fired_at_s: float
    first_segment_index: int
    last_segment_index: int
    start_s: float
    end_s: float
    evidence: list[dict[str, Any]]


def metric_value(point: Point, metric: str) -> float | None:
    if metric.startswith("probability."):
        return float(point.scores.get(metric.split(".", 1)[1], 0.0))
    value = getattr(point, metric)
    return None if value is None else float(value)


def _item(point: Point, path: str, kind: str, text: str, first: Point | None = None) -> dict[str, Any]:
    first = first or point
    return {"condition": path, "kind": kind, "text": text, "role": point.role,
            "first_segment_index": first.index, "last_segment_index": point.index,
            "start_s": first.start_s, "end_s": point.end_s}


class _Node:
    """A condition's evaluation state along one walk of a trajectory."""

    value = False

    def step(self, point: Point) -> bool:
        raise NotImplementedError

    def evidence(self) -> list[dict[str, Any]]:
        return []


def _matches(roles: Roles, point: Point) -> bool:
    return roles is None or point.role in roles


class _Segment(_Node):
    """A per-segment test about the latest segment of its roles (false until there is one)."""

    def __init__(self, spec: LabelIs | Threshold | Words, path: str) -> None:
        self.spec, self.path = spec, path
        self.latest: Point | None = None

    def step(self, point: Point) -> bool:
        if _matches(self.spec.roles, point):
            self.latest = point
            self.value = self.test(point)
        return self.value

    def test(self, p: Point) -> bool:
        spec = self.spec
        if isinstance(spec, LabelIs):
            return p.label in spec.labels
        if isinstance(spec, Threshold):
            v = metric_value(p, spec.metric)
            return v is not None and (spec.min is None or v >= spec.min) and (
                spec.max is None or v <= spec.max)
        if p.text is None:  # no transcript: a words condition is simply false
            return False
        return (not spec.any_of or any(w.search(p.text) for w in spec.any_of)) and all(
            w.search(p.text) for w in spec.all_of)

    def evidence(self) -> list[dict[str, Any]]:
        if not self.value or self.latest is None:
            return []
        p, spec = self.latest, self.spec
        if isinstance(spec, LabelIs):
            kind, text = "label", f"label {p.label}"
        elif isinstance(spec, Threshold):
            bounds = " and ".join(b for b in (f"≥ {spec.min}" if spec.min is not None else "",
                                              f"≤ {spec.max}" if spec.max is not None else "") if b)
            kind, text = "threshold", f"{spec.metric} {metric_value(p, spec.metric) or 0.0:.3f} {bounds}"
        else:
            kind, text = "words", "transcript words matched"
        return [_item(p, self.path, kind, text)]


class _Sustained(_Node):
    def __init__(self, spec: Sustained, path: str) -> None:
        self.spec, self.path = spec, path
        self.inner = _build(spec.condition, f"{path}.condition")
        self.run_first: Point | None = None
        self.run_last: Point | None = None
        self.count = 0

    def step(self, point: Point) -> bool:
        inner = self.inner.step(point)
        if _matches(self.spec.roles, point):
            if inner:
                self.run_first = self.run_first or point
                self.run_last, self.count = point, self.count + 1
            else:
                self.run_first, self.run_last, self.count = None, None, 0
        self.value = self.run_first is not None and self._long_enough()
        return self.value

    def _long_enough(self) -> bool:
        assert self.run_first is not None and self.run_last is not None
        spec = self.spec
        return (spec.segments is None or self.count >= spec.segments) and (
            spec.seconds is None or self.run_last.end_s - self.run_first.start_s >= spec.seconds)

    def evidence(self) -> list[dict[str, Any]]:
        if not self.value or self.run_first is None or self.run_last is None:
            return []
        span = self.run_last.end_s - self.run_first.start_s
        return [_item(self.run_last, self.path, "sustained",
                      f"held for {self.count} consecutive segment(s), {span:.1f} s", self.run_first)]


class _Trend(_Node):
    def __init__(self, spec: Trend, path: str) -> None:
        self.spec, self.path = spec, path
        self.window: deque[tuple[Point, float]] = deque()
        self.pair: tuple[Point, Point, float] | None = None

    def step(self, point: Point) -> bool:
        if not _matches(self.spec.roles, point):
            return self.value
        value = metric_value(point, self.spec.metric)
        if value is None:
            return self.value
        while self.window and self.window[0][0].end_s < point.end_s - self.spec.within_s:
            self.window.popleft()
        self.value, self.pair = False, None
        if self.window:
            # A drop is measured from the highest earlier value in the window, a rise from the lowest.
            if self.spec.change < 0:
                ref, ref_value = max(self.window, key=lambda pv: pv[1])
                self.value = value - ref_value <= self.spec.change
            else:
                ref, ref_value = min(self.window, key=lambda pv: pv[1])
                self.value = value - ref_value >= self.spec.change
            if self.value:
                self.pair = (ref, point, value - ref_value)
        self.window.append((point, value))
        return self.value

    def evidence(self) -> list[dict[str, Any]]:
        if not self.value or self.pair is None:
            return []
        ref, now, delta = self.pair
        text = f"{self.spec.metric} changed by {delta:+.3f} within {now.end_s - ref.end_s:.1f} s"
        return [_item(now, self.path, "trend", text, ref)]


class _Conversation(_Node):
    """silence_over, interruptions_at_least, talk_share, sentiment_trend at this point of the call."""

    def __init__(self, spec: ConversationCondition, path: str) -> None:
        self.spec, self.path = spec, path
        self.latest: tuple[Point, str] | None = None

    def step(self, point: Point) -> bool:
        now = point.context.at(point.index, point.start_s, point.end_s) if point.context else None
        self.value, text = holds(self.spec, now)
        self.latest = (point, text)
        return self.value

    def evidence(self) -> list[dict[str, Any]]:
        if not self.value or self.latest is None:
            return []
        point, text = self.latest
        return [_item(point, self.path, self.spec.key, text)]


class _Combine(_Node):
    def __init__(self, spec: AllOf | AnyOf, path: str) -> None:
        self.all = isinstance(spec, AllOf)
        key = "all" if self.all else "any"
        self.children = [_build(c, f"{path}.{key}[{i}]") for i, c in enumerate(spec.conditions)]

    def step(self, point: Point) -> bool:
        values = [child.step(point) for child in self.children]  # every child keeps its state
        self.value = all(values) if self.all else any(values)
        return self.value

    def evidence(self) -> list[dict[str, Any]]:
        return [item for child in self.children if child.value for item in child.evidence()]


class _Not(_Node):
    def __init__(self, spec: Not, path: str) -> None:
        self.inner = _build(spec.condition, f"{path}.not")

    def step(self, point: Point) -> bool:
        self.value = not self.inner.step(point)
        return self.value


def _build(spec: Condition, path: str) -> _Node:
    if isinstance(spec, LabelIs | Threshold | Words):
        return _Segment(spec, path)
    if isinstance(spec, Sustained):
        return _Sustained(spec, path)
    if isinstance(spec, Trend):
        return _Trend(spec, path)
    if isinstance(spec, AllOf | AnyOf):
        return _Combine(spec, path)
    if isinstance(spec, ConversationCondition):
        return _Conversation(spec, path)
    return _Not(spec, path)


def evaluate(definition: RuleDefinition, trajectory: Sequence[Point]) -> list[Firing]:
    """Episodes that fire on ``trajectory`` (points in call order). Pure: no I/O, no clock."""
    root = _build(definition.when, "when")
    firings: list[Firing] = []
    was_true = False
    last_fired_at: float | None = None
    for point in trajectory:
        now = root.step(point)
        rising, was_true = now and not was_true, now
        if not rising:
            continue
        if last_fired_at is not None and point.end_s - last_fired_at < definition.cooldown_s:
            continue  # the whole episode stays silent: it began inside the cooldown
        last_fired_at = point.end_s
        evidence = root.evidence() or [_item(point, "when", "segment", "condition became true here")]
        firings.append(Firing(
            window_key=f"seg-{point.index}",
            fired_at_s=point.end_s,
            first_segment_index=min(e["first_segment_index"] for e in evidence),
            last_segment_index=max(point.index, *(e["last_segment_index"] for e in evidence)),
            start_s=min(e["start_s"] for e in evidence),
            end_s=max(point.end_s, *(e["end_s"] for e in evidence)),
            evidence=evidence,
        ))
    return firings
