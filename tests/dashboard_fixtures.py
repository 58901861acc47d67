"""Calls stored directly (recording, segments, one prediction per labelled segment) for the
analytics and dashboard tests, which need exact figures rather than a model's output. Done calls
also get their emotion rollup, written by the same function the pipeline calls on completion."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from db.models import Prediction, Recording, RecordingStatus, Segment
from db.queries.analytics import write_emotion_rollup
from db.session import transaction

# (role, label, seconds, valence); agent segments carry no prediction (tenant policy).
Seg = tuple[str, str | None, float, float | None]


def store_call(tenant_id: uuid.UUID, created_at: datetime, meta: dict, segments: list[Seg],
               status: str = "done") -> uuid.UUID:
    """A recording with its segments and one prediction per labelled segment, stored directly."""
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="call.wav", media_uri="/nonexistent.wav", meta=meta,
                        channels=2, channel_roles={"0": "agent", "1": "customer"}, duration_s=60.0,
                        status=status, created_at=created_at, updated_at=created_at)
        s.add(rec)
        s.flush()
        start = 0.0
        for index, (role, label, seconds, valence) in enumerate(segments):
            seg = Segment(recording_id=rec.id, index=index, channel=int(role == "customer"), speaker=role,
                          role=role, start_s=start, end_s=start + seconds, analyzed=label is not None,
                          skip_reason=None if label else "policy")
            s.add(seg)
            s.flush()
            if label is not None:
                s.add(Prediction(segment_id=seg.id, model_name="embedded", model_version="1", label=label,
                                 raw_label=label, scores={label: 1.0}, valence=valence, arousal=0.5,
                                 confidence=0.9, reasoning=[], created_at=created_at))
            start += seconds + 1.0
        if status == RecordingStatus.done.value:
            write_emotion_rollup(s, rec.id)  # as worker.stages does when a recording becomes done
        return rec.id


def store_conversation(rec_id: uuid.UUID, customer_share: float = 0.4, interruptions: int = 2,
                       sentiment: float = -1.0, trend: float = 0.5) -> None:
    """Conversation measures of a 60 s call, as the pipeline stores them when a call is done."""
    measures = {
        "duration_s": 60.0,
        "talk": {"agent": {"seconds": 12.0, "share": 0.2},
                 "customer": {"seconds": customer_share * 60, "share": customer_share}},
        "non_talk": {"total_s": 6.0, "share": 0.1, "silences": [{"start_s": 50.0, "end_s": 56.0,
                                                                  "duration_s": 6.0}]},
        "interruptions": {"count": interruptions, "total_s": 0.5 * interruptions, "by_role": {}, "items": []},
        "talk_speed": {}, "loudness": [],
        "sentiment": {"role": "customer", "overall": sentiment, "by_quarter": [], "trend": trend},
    }
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None
        rec.conversation = measures


def rescore_last_customer_segment(rec_id: uuid.UUID, label: str, valence: float) -> None:
    """A newer model version's prediction for a segment: aggregates must count only this one."""
    with transaction() as s:
        seg = (s.query(Segment).filter_by(recording_id=rec_id, role="customer")
               .order_by(Segment.index.desc()).first())
        assert seg is not None
        s.add(Prediction(segment_id=seg.id, model_name="embedded", model_version="2", label=label,
                         raw_label=label, scores={label: 1.0}, valence=valence, arousal=0.5, confidence=0.9,
                         reasoning=[], created_at=datetime.now(UTC)))
        rec = s.get(Recording, rec_id)
        if rec is not None and rec.status == RecordingStatus.done.value:
            write_emotion_rollup(s, rec_id)  # a re-analysis finishing would rewrite the rollup too


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_token(html: str) -> str:
    """The hidden CSRF field a dashboard page rendered into its forms."""
    found = CSRF_FIELD.search(html)
    assert found is not None and found.group(1), "page without a CSRF field"
    return found.group(1)


def login_form_token(client: Any) -> str:
    """Open the login form as a browser would (it sets the pre-session cookie); its token."""
    page = client.get("/dashboard/login")
    assert page.status_code == 200, page.text
    return csrf_token(page.text)


def store_alert(tenant_id: uuid.UUID, rec_id: uuid.UUID, rule_name: str = "Angry customer",
                severity: str = "high", start_s: float = 1.0) -> uuid.UUID:
    """A rule (version 1) and one open alert of it on ``rec_id``, as the rules stage would store them."""
    from db.models import Alert
    from db.queries.rules import create_rule

    with transaction() as s:
        definition = {"severity": severity, "when": {"label": "angry"}}
        rule, version = create_rule(s, tenant_id, rule_name, "", True, definition, severity)
        alert = Alert(tenant_id=tenant_id, rule_id=rule.id, rule_version_id=version.id, rule_version=1,
                      recording_id=rec_id, window_key=f"w{uuid.uuid4().hex[:8]}", severity=severity,
                      first_segment_index=0, last_segment_index=0, start_s=start_s, end_s=start_s + 3.0,
                      fired_at_s=start_s + 3.0, evidence=[{
                          "condition": "when", "kind": "label", "text": "customer angry 0.90 for 3.0 s",
                          "role": "customer", "first_segment_index": 0, "last_segment_index": 0,
                          "start_s": start_s, "end_s": start_s + 3.0}])
        s.add(alert)
        s.flush()
        return alert.id
