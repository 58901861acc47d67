"""What the dashboard's templates draw: the Jinja2 environment with its filters, and the geometry
of the inline SVG charts (computed here so templates only place shapes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from fastapi.templating import Jinja2Templates

from api.call_view import readable_evidence, reason_line
from api.csrf import csrf_field, page_token, session_key_label
from api.schemas import TimelineSegment
from db.queries.analytics import AlertGroup, EmotionGroup
from worker.pipeline.labels import CANONICAL_LABELS, MAFW_EXTRA_LABELS

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

LABELS: tuple[str, ...] = (*CANONICAL_LABELS, *MAFW_EXTRA_LABELS)
# Distinct hues that keep at least 3:1 contrast against white; every chart also names the label
# in text (legend, tooltip, aria-label), so colour is never the only carrier of meaning.
LABEL_COLOURS = {
    "neutral": "#6b7280", "happy": "#1a7f37", "sad": "#2f5fc4", "angry": "#c62828", "fear": "#7b3fa0",
    "disgust": "#7a5c00", "surprise": "#b35c00", "contempt": "#a0386a", "anxiety": "#5a4fcf",
    "helplessness": "#4b5b6b", "disappointment": "#16737a",
}
UNKNOWN_COLOUR = "#9aa0a6"


def label_colour(label: str | None) -> str:
    return LABEL_COLOURS.get(label or "", UNKNOWN_COLOUR)


def clock(seconds: float | None) -> str:
    """Call time as m:ss.s (h:mm:ss past an hour)."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds >= 3600:
        whole = int(seconds)
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}".replace("-", "−")


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(clock=clock, percent=percent, signed=signed, colour=label_colour)
templates.env.globals.update(LABELS=LABELS, label_colour=label_colour, csrf_field=csrf_field,
                             csrf_token=page_token, reason_line=reason_line,
                             readable_evidence=readable_evidence, session_key_label=session_key_label)

# --- Call timeline -------------------------------------------------------------------------------

CHART_W, PAD_L, PAD_R = 960.0, 72.0, 16.0
BAND_Y, BAND_H = 8.0, 18.0
PLOT_TOP, PLOT_H = 40.0, 110.0
AXIS_Y = PLOT_TOP + PLOT_H + 16.0
TIMELINE_H = AXIS_Y + 8.0


@dataclass(frozen=True)
class SegmentMark:
    segment: TimelineSegment
    x: float
    width: float
    colour: str
    uncertain: bool
    point_y: float | None  # None: no valence (skipped, pending, or a backend without valence)
    description: str


@dataclass
class RoleTimeline:
    role: str
    marks: list[SegmentMark] = field(default_factory=list)

    @property
    def polyline(self) -> str:
        points = [(m.x + m.width / 2, m.point_y) for m in self.marks if m.point_y is not None]
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


@dataclass(frozen=True)
class Tick:
    x: float
    text: str


def time_x(seconds: float, duration: float) -> float:
    return PAD_L + (CHART_W - PAD_L - PAD_R) * max(0.0, min(seconds, duration)) / duration


def valence_y(valence: float) -> float:
    return PLOT_TOP + PLOT_H * (1.0 - (max(-1.0, min(1.0, valence)) + 1.0) / 2.0)


def _tick_step(duration: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 10:
            return float(step)
    return 7200.0


def time_ticks(duration: float) -> list[Tick]:
    step = _tick_step(duration)
    return [Tick(time_x(i * step, duration), clock(i * step).removesuffix(".0"))
            for i in range(int(duration // step) + 1)]


def _describe(seg: TimelineSegment, uncertain: bool) -> str:
    when = f"{clock(seg.start_s)} to {clock(seg.end_s)}"
    if seg.label is None:
        return f"{when}: {seg.skip_reason or 'not analyzed yet'}"
    parts = [f"{when}: {seg.label}"]
    if seg.valence is not None:
        parts.append(f"valence {signed(seg.valence)}")
    if seg.confidence is not None:
        parts.append(f"confidence {seg.confidence:.2f}" + (" (uncertain)" if uncertain else ""))
    return ", ".join(parts) + ". Play from here."


def role_timelines(segments: Sequence[TimelineSegment], duration: float) -> list[RoleTimeline]:
    """One chart per speaker role, customers first, in call order."""
    duration = max(duration, max((s.end_s for s in segments), default=0.0), 1.0)
    by_role: dict[str, RoleTimeline] = {}
    for seg in segments:
        uncertain = bool(seg.uncertain)
        x = time_x(seg.start_s, duration)
        by_role.setdefault(seg.role, RoleTimeline(seg.role)).marks.append(SegmentMark(
            segment=seg, x=x, width=max(2.0, time_x(seg.end_s, duration) - x),
            colour=label_colour(seg.label), uncertain=uncertain,
            point_y=valence_y(seg.valence) if seg.valence is not None else None,
            description=_describe(seg, uncertain),
        ))
    order = {"customer": 0, "unknown": 1}
    return sorted(by_role.values(), key=lambda t: (order.get(t.role, 2), t.role))


# --- Overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarPart:
    label: str
    x: float
    width: float
    share: float


def stacked_parts(group: EmotionGroup, width: float) -> list[BarPart]:
    """A group's label shares as consecutive pieces of a bar ``width`` long, in LABELS order."""
    parts, x = [], 0.0
    for label in LABELS:
        share = group.share(label)
        if share > 0:
            parts.append(BarPart(label, x, share * width, share))
            x += share * width
    return parts


@dataclass(frozen=True)
class DayColumn:
    key: str
    x: float
    width: float
    calls: int
    parts: list[BarPart]  # x and width are vertical here: offsets from the top of the plot


@dataclass(frozen=True)
class LinePoint:
    key: str
    x: float
    y: float
    value: float


TREND_W, TREND_PAD_L, TREND_PAD_R, TREND_TOP, TREND_H = 960.0, 48.0, 16.0, 12.0, 160.0
# Line charts sit two to a row: drawn at half width so their text keeps its size.
LINE_W = 480.0


def day_columns(groups: Sequence[EmotionGroup]) -> list[DayColumn]:
    if not groups:
        return []
    slot = (TREND_W - TREND_PAD_L - TREND_PAD_R) / len(groups)
    return [DayColumn(g.key, TREND_PAD_L + i * slot + slot * 0.15, slot * 0.7, g.calls,
                      stacked_parts(g, TREND_H)) for i, g in enumerate(groups)]


def trend_points(keys: Sequence[str], values: Sequence[float | None], low: float, high: float,
                 width: float = LINE_W) -> list[LinePoint]:
    """Points of a line chart over the day slots; days without a value are left out."""
    if not keys:
        return []
    slot = (width - TREND_PAD_L - TREND_PAD_R) / len(keys)
    span = (high - low) or 1.0
    return [LinePoint(k, TREND_PAD_L + (i + 0.5) * slot, TREND_TOP + TREND_H * (1 - (v - low) / span), v)
            for i, (k, v) in enumerate(zip(keys, values, strict=True)) if v is not None]


def alert_shares(groups: Sequence[AlertGroup]) -> dict[str, AlertGroup]:
    return {g.key: g for g in groups}


def every_day(groups: Sequence[EmotionGroup], first: date, last: date) -> list[EmotionGroup]:
    """One group per calendar day from ``first`` to ``last``, empty where no call finished, so
    the trend charts keep a true time axis."""
    by_key = {g.key: g for g in groups}
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [by_key.get(d.isoformat()) or EmotionGroup(d.isoformat()) for d in days]
