"""The rule language: parse and validate a definition (JSON or YAML) into immutable specs.

A definition is a mapping::

    severity: high          # info | low | medium | high | critical (default: medium)
    cooldown_s: 300         # call seconds after an alert during which new episodes stay silent
    roles: [customer]       # default speaker-role filter for every condition (default: all roles)
    when: <condition>

A condition is a mapping with exactly one condition key, plus an optional ``role`` (a role or a
list) that filters the segments its subtree looks at. docs/RULES.md describes each key with
examples; every problem is reported with its path so the API can answer a precise 422.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from worker.pipeline.labels import CANONICAL_LABELS, MAFW_EXTRA_LABELS
from worker.rules import conversation_rules
from worker.rules.conversation_rules import ConversationCondition
from worker.rules.nesting import MAX_TEXT_DEPTH, text_depth_exceeds

LABELS = frozenset(CANONICAL_LABELS + MAFW_EXTRA_LABELS)
SEVERITIES = ("info", "low", "medium", "high", "critical")
PLAIN_METRICS = {"valence": (-1.0, 1.0), "arousal": (0.0, 1.0), "confidence": (0.0, 1.0)}
ROLE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
CONDITION_KEYS = ("label", "probability", "valence", "arousal", "confidence", "words", "sustained",
                  "trend", "all", "any", "not", *conversation_rules.KEYS)
MAX_DEPTH = 12
MAX_CHILDREN = 50
# Depth and breadth caps alone still allow 50 ** 12 conditions; a few hundred keeps every rule cheap
# to evaluate (each segment runs every condition of every enabled rule on the shared rules queue).
MAX_CONDITIONS = 200
MAX_COOLDOWN_S = 24 * 3600.0

Path = tuple[str | int, ...]
Problems = list[tuple[Path, str]]


class RuleError(ValueError):
    """Every problem found in a definition, each with its path inside it."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(path)}: {msg}" for path, msg in problems))


def _dotted(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(root)"


Roles = frozenset[str] | None  # None: every role


@dataclass(frozen=True)
class LabelIs:
    labels: frozenset[str]
    roles: Roles


@dataclass(frozen=True)
class Threshold:
    metric: str  # valence | arousal | confidence | probability.<label>
    min: float | None
    max: float | None
    roles: Roles


@dataclass(frozen=True)
class Words:
    any_of: tuple[re.Pattern[str], ...]
    all_of: tuple[re.Pattern[str], ...]
    roles: Roles


@dataclass(frozen=True)
class Sustained:
    condition: Condition
    seconds: float | None
    segments: int | None
    roles: Roles


@dataclass(frozen=True)
class Trend:
    metric: str
    change: float  # negative: a drop of at least -change; positive: a rise of at least change
    within_s: float
    roles: Roles


@dataclass(frozen=True)
class AllOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    condition: Condition


Condition = LabelIs | Threshold | Words | Sustained | Trend | AllOf | AnyOf | Not | ConversationCondition


@dataclass(frozen=True)
class RuleDefinition:
    when: Condition
    severity: str
    cooldown_s: float


ALIASES_REFUSED = "YAML aliases/anchors are not allowed in rule definitions"


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases.

    PyYAML shares an aliased node, so ~300 bytes of nested aliases ("billion laughs") decode to a
    tree with billions of paths that every later walk (validation, JSON encoding, storage) expands.
    A rule never needs them: refuse them before anything is built."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise RuleError([((), f"{ALIASES_REFUSED} (line {event.start_mark.line + 1})")])
        return super().compose_node(parent, index)


def parse_text(text: str, content_type: str = "application/json") -> Any:
    """JSON, or YAML when the content type says so (YAML is a superset of JSON, so either parses)."""
    kind = "YAML" if "yaml" in content_type.lower() else "JSON"
    if text_depth_exceeds(text):
        raise RuleError([((), f"not valid {kind}: nested too deeply (more than {MAX_TEXT_DEPTH} levels)")])
    try:
        if kind == "YAML":
            return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader, minus aliases
        return json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise RuleError([((), f"not valid {kind}: {exc}")]) from exc
    except ValueError as exc:
        # int() refuses integers of more than 4,300 digits (both parsers call it): a 422, not a 500.
        raise RuleError([((), f"not valid {kind}: a number is too long ({str(exc)[:80]})")]) from exc
    except RecursionError as exc:
        # Both parsers recurse per nesting level: thousands of levels must be a 422, not a 500.
        raise RuleError([((), f"not valid {kind}: nested too deeply")]) from exc


def parse_text_result(text: str, content_type: str) -> tuple[bool, Any]:
    """parse_text as plain data, for a parser process: (True, value) or (False, problems)."""
    try:
        return True, parse_text(text, content_type)
    except RuleError as exc:
        return False, exc.problems


def parse_definition(raw: Any) -> RuleDefinition:
    """Validate a decoded definition; raise RuleError listing every problem found."""
    problems: Problems = []
    if not isinstance(raw, Mapping):
        raise RuleError([((), "a rule definition must be a mapping with at least a 'when' condition")])
    _unknown_keys(raw, {"when", "severity", "cooldown_s", "roles"}, (), problems)
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        problems.append((("severity",), f"must be one of {', '.join(SEVERITIES)}"))
    cooldown = _number(raw.get("cooldown_s", 0.0), ("cooldown_s",), problems, low=0.0, high=MAX_COOLDOWN_S)
    roles = _roles(raw["roles"], ("roles",), problems) if "roles" in raw else None
    when = None
    if "when" not in raw:
        problems.append((("when",), "missing: the condition that fires the rule"))
    else:
        when = _condition(raw["when"], ("when",), roles, problems, depth=0, tally=_Tally())
    if problems or when is None:
        raise RuleError(problems)
    return RuleDefinition(when=when, severity=str(severity), cooldown_s=cooldown or 0.0)


def _unknown_keys(raw: Mapping[str, Any], known: set[str], path: Path, problems: Problems) -> None:
    for key in raw:
        if key not in known:
            problems.append(((*path, str(key)), f"unknown key; expected one of {', '.join(sorted(known))}"))


def _number(value: Any, path: Path, problems: Problems, low: float | None = None,
            high: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append((path, "must be a finite number"))
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        problems.append((path, f"must be between {low} and {high}"))
        return None
    return float(value)


def _roles(value: Any, path: Path, problems: Problems) -> Roles:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(r, str) for r in items):
        problems.append((path, "must be a role or a non-empty list of roles, e.g. customer"))
        return None
    bad = [r for r in items if not ROLE_PATTERN.match(r)]
    if bad:
        problems.append((path, f"invalid role(s) {bad}: lowercase letters, digits, '_' or '-'"))
        return None
    return frozenset(items)


@dataclass
class _Tally:
    """Conditions seen so far in one definition, shared by the whole recursive walk."""

    conditions: int = 0


def _condition(raw: Any, path: Path, roles: Roles, problems: Problems, depth: int, tally: _Tally
               ) -> Condition | None:
    if depth > MAX_DEPTH:
        problems.append((path, f"conditions nest deeper than {MAX_DEPTH} levels"))
        return None
    tally.conditions += 1
    if tally.conditions > MAX_CONDITIONS:
        # Reported once; every later condition stops here too, so the walk stays short.
        if tally.conditions == MAX_CONDITIONS + 1:
            problems.append((("when",), f"more than {MAX_CONDITIONS} conditions in one rule; "
                                        "split it into several rules"))
        return None
    if not isinstance(raw, Mapping):
        problems.append((path, f"a condition must be a mapping with one of: {', '.join(CONDITION_KEYS)}"))
        return None
    keys = [k for k in raw if k != "role"]
    if len(keys) != 1 or keys[0] not in CONDITION_KEYS:
        problems.append((path, f"a condition needs exactly one of {', '.join(CONDITION_KEYS)} "
                               f"(plus an optional 'role'); got {sorted(map(str, raw)) or 'nothing'}"))
        return None
    if "role" in raw:
        roles = _roles(raw["role"], (*path, "role"), problems)
    key = keys[0]
    body, here = raw[key], (*path, key)
    if key == "label":
        return _label(body, here, roles, problems)
    if key in ("probability", *PLAIN_METRICS):
        return _threshold(key, body, here, roles, problems)
    if key == "words":
        return _words(body, here, roles, problems)
    if key == "sustained":
        return _sustained(body, here, roles, problems, depth, tally)
    if key == "trend":
        return _trend(body, here, roles, problems)
    if key in conversation_rules.KEYS:
        return conversation_rules.parse(key, body, here, roles, problems)
    if key == "not":
        inner = _condition(body, here, roles, problems, depth + 1, tally)
        return Not(inner) if inner is not None else None
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_CHILDREN:
        problems.append((here, f"must be a list of 1 to {MAX_CHILDREN} conditions"))
        return None
    children = [_condition(item, (*here, i), roles, problems, depth + 1, tally)
                for i, item in enumerate(body)]
    if any(c is None for c in children):
        return None
    kids = tuple(c for c in children if c is not None)
    return AllOf(kids) if key == "all" else AnyOf(kids)


def _label_names(value: Any, path: Path, problems: Problems) -> frozenset[str] | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        problems.append((path, "must be a label or a non-empty list of labels"))
        return None
    unknown = [v for v in items if v not in LABELS]
    if unknown:
        problems.append((path, f"unknown label(s) {unknown}; known: {', '.join(sorted(LABELS))}"))
        return None
    return frozenset(items)


def _label(body: Any, path: Path, roles: Roles, problems: Problems) -> LabelIs | None:
    labels = _label_names(body, path, problems)
    return LabelIs(labels, roles) if labels is not None else None


def _metric(name: Any, path: Path, problems: Problems) -> tuple[str, tuple[float, float]] | None:
    if isinstance(name, str) and name in PLAIN_METRICS:
        return name, PLAIN_METRICS[name]
    if isinstance(name, str) and name.startswith("probability.") and name.split(".", 1)[1] in LABELS:
        return name, (0.0, 1.0)
    problems.append((path, "must be valence, arousal, confidence or probability.<label>, "
                           "e.g. probability.angry"))
    return None


def _threshold(key: str, body: Any, path: Path, roles: Roles, problems: Problems
               ) -> Threshold | None:
    if not isinstance(body, Mapping):
        problems.append((path, "must be a mapping with min and/or max"))
        return None
    known = {"min", "max", "label"} if key == "probability" else {"min", "max"}
    _unknown_keys(body, known, path, problems)
    if key == "probability":
        if "label" not in body:
            problems.append(((*path, "label"), "missing: which label's probability"))
            return None
        labels = _label_names(body["label"], (*path, "label"), problems)
        if labels is None or len(labels) != 1:
            if labels is not None:
                problems.append(((*path, "label"), "exactly one label"))
            return None
        key = f"probability.{next(iter(labels))}"
    low, high = (0.0, 1.0) if key.startswith("probability.") else PLAIN_METRICS[key]
    if "min" not in body and "max" not in body:
        problems.append((path, "needs min and/or max (inclusive bounds)"))
        return None
    lo = _number(body["min"], (*path, "min"), problems, low, high) if "min" in body else None
    hi = _number(body["max"], (*path, "max"), problems, low, high) if "max" in body else None
    if lo is not None and hi is not None and lo > hi:
        problems.append((path, "min is greater than max"))
        return None
    return Threshold(key, lo, hi, roles)


def _word_patterns(value: Any, path: Path, problems: Problems) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CHILDREN or not all(
            isinstance(w, str) and w.strip() for w in value):
        problems.append((path, f"must be a list of 1 to {MAX_CHILDREN} non-empty words or phrases"))
        return ()
    # Whole words, case-insensitive; a phrase matches with any whitespace between its words.
    return tuple(re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, w.split())) + r"(?!\w)", re.IGNORECASE)
                 for w in value)


def _words(body: Any, path: Path, roles: Roles, problems: Problems) -> Words | None:
    if not isinstance(body, Mapping) or not ({"any", "all"} & set(body)):
        problems.append((path, "must be a mapping with 'any' and/or 'all': lists of words or phrases"))
        return None
    _unknown_keys(body, {"any", "all"}, path, problems)
    any_of = _word_patterns(body["any"], (*path, "any"), problems) if "any" in body else ()
    all_of = _word_patterns(body["all"], (*path, "all"), problems) if "all" in body else ()
    return Words(any_of, all_of, roles)


def _sustained(body: Any, path: Path, roles: Roles, problems: Problems, depth: int, tally: _Tally
               ) -> Sustained | None:
    if not isinstance(body, Mapping) or "condition" not in body:
        problems.append((path, "must be a mapping with 'condition' and 'seconds' and/or 'segments'"))
        return None
    _unknown_keys(body, {"condition", "seconds", "segments"}, path, problems)
    if "seconds" not in body and "segments" not in body:
        problems.append((path, "needs 'seconds' (≥ N seconds) and/or 'segments' (≥ K consecutive)"))
    seconds = _number(body["seconds"], (*path, "seconds"), problems, 0.0, 24 * 3600.0) \
        if "seconds" in body else None
    segments = body.get("segments")
    if segments is not None and (isinstance(segments, bool) or not isinstance(segments, int)
                                 or not 1 <= segments <= 10_000):
        problems.append(((*path, "segments"), "must be an integer from 1 to 10000"))
        segments = None
    inner = _condition(body["condition"], (*path, "condition"), roles, problems, depth + 1, tally)
    if inner is None or (seconds is None and segments is None):
        return None
    return Sustained(inner, seconds, segments, roles)


def _trend(body: Any, path: Path, roles: Roles, problems: Problems) -> Trend | None:
    if not isinstance(body, Mapping):
        problems.append((path, "must be a mapping with metric, drop or rise, and within_s"))
        return None
    _unknown_keys(body, {"metric", "drop", "rise", "within_s"}, path, problems)
    metric = _metric(body.get("metric"), (*path, "metric"), problems)
    if ("drop" in body) == ("rise" in body):
        problems.append((path, "needs exactly one of 'drop' or 'rise'"))
        return None
    which = "drop" if "drop" in body else "rise"
    amount = _number(body[which], (*path, which), problems, 0.0, 2.0)
    if amount is not None and amount <= 0:
        problems.append(((*path, which), "must be greater than 0"))
        amount = None
    if "within_s" not in body:
        problems.append(((*path, "within_s"), "missing: the window in call seconds"))
        return None
    within = _number(body["within_s"], (*path, "within_s"), problems, 0.0, 24 * 3600.0)
    if metric is None or amount is None or within is None:
        return None
    return Trend(metric[0], -amount if which == "drop" else amount, within, roles)
