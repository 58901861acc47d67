"""Response bodies of /v1/analytics (the same aggregates the dashboard's overview draws)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from db.queries.analytics import AlertGroup, EmotionGroup


class LabelOut(BaseModel):
    segments: int
    seconds: float
    share: float = Field(description="Share of the group's analyzed speech time (0..1).")


class EmotionGroupOut(BaseModel):
    key: str = Field(description="The UTC day (YYYY-MM-DD), agent or queue; '(none)' when unset.")
    calls: int = Field(description="Finished calls in the group.")
    segments: int = Field(description="Analyzed segments of the requested roles.")
    seconds: float
    mean_valence: float | None
    mean_arousal: float | None
    labels: dict[str, LabelOut]

    @classmethod
    def build(cls, group: EmotionGroup) -> EmotionGroupOut:
        return cls(
            key=group.key, calls=group.calls, segments=group.segments, seconds=round(group.seconds, 3),
            mean_valence=group.mean_valence, mean_arousal=group.mean_arousal,
            labels={label: LabelOut(segments=stats.segments, seconds=round(stats.seconds, 3),
                                    share=round(group.share(label), 6))
                    for label, stats in sorted(group.labels.items())},
        )


class AlertGroupOut(BaseModel):
    key: str = Field(description="The UTC day (YYYY-MM-DD), agent or queue; '(none)' when unset.")
    calls: int = Field(description="Finished calls in the group.")
    calls_with_alerts: int
    alert_share: float = Field(description="calls_with_alerts / calls (0..1).")
    alerts: int
    by_severity: dict[str, int]

    @classmethod
    def build(cls, group: AlertGroup) -> AlertGroupOut:
        return cls(key=group.key, calls=group.calls, calls_with_alerts=group.calls_with_alerts,
                   alert_share=round(group.alert_share, 6), alerts=group.alerts,
                   by_severity=dict(sorted(group.by_severity.items())))


class AnalyticsRange(BaseModel):
    group_by: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")


class EmotionAnalytics(AnalyticsRange):
    roles: list[str]
    groups: list[EmotionGroupOut]


class AlertAnalytics(AnalyticsRange):
    groups: list[AlertGroupOut]


class ConversationGroupOut(BaseModel):
    key: str = Field(description="The UTC day (YYYY-MM-DD), agent or queue; '(none)' when unset.")
    calls: int = Field(description="Finished calls in the group that have conversation measures.")
    talk_share: dict[str, float | None] = Field(description="Average share of the call per role (0..1).")
    non_talk_share: float | None = Field(description="Average share of the call in silences over 2 s.")
    interruptions: float | None = Field(description="Average interruptions per call.")
    duration_s: float | None = Field(description="Average call length.")
    sentiment: float | None = Field(description="Average customer sentiment per call (−5..+5).")
    sentiment_trend: float | None = Field(description="Average trend of it (last quarter − first).")


class ConversationAnalytics(AnalyticsRange):
    groups: list[ConversationGroupOut]
