"""The per-call emotion rollup behind /v1/analytics/emotions and the dashboard overview: written by
the real pipeline stages when a call becomes done, backfilled by migration 0004, and always equal
to the direct aggregation over segments and their newest predictions."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import Session

from callpulse.settings import get_settings
from db.migrate import upgrade
from db.models import Prediction, Recording, RecordingEmotionRollup, Segment
from db.queries import analytics
from db.session import transaction
from tests.conftest import PG_ADMIN_URL
from tests.dashboard_fixtures import rescore_last_customer_segment, store_call
from tests.support import EXAMPLE
from worker.stages import infer, ingest

ROLE_SETS: list[list[str]] = [list(analytics.SUBJECT_ROLES), ["agent"], ["customer", "agent"]]


def _figures(groups: list[analytics.EmotionGroup]) -> list[tuple]:
    return [(g.key, g.calls, g.segments, round(g.seconds, 6), g.valence_n, round(g.valence_sum, 6),
             g.arousal_n, round(g.arousal_sum, 6),
             {label: (st.segments, round(st.seconds, 6)) for label, st in g.labels.items()})
            for g in groups]


def assert_rollup_matches_direct(s: Session, tenant_id: uuid.UUID, start: datetime, end: datetime) -> None:
    for group_by in analytics.GROUP_BYS:
        for roles in ROLE_SETS:
            rollup = analytics.emotion_distribution(s, tenant_id, group_by, start, end, roles)
            direct = analytics.emotion_distribution_direct(s, tenant_id, group_by, start, end, roles)
            assert _figures(rollup) == _figures(direct), (group_by, roles)


def _rows(s: Session, tenant_id: uuid.UUID | None = None) -> list[tuple]:
    r = RecordingEmotionRollup
    stmt = select(r.recording_id, r.role, r.label, r.tenant_id, r.created_at, r.day, r.agent, r.queue,
                  r.segments, r.seconds, r.valence_sum, r.valence_n, r.arousal_sum, r.arousal_n,
                  r.model_version)
    if tenant_id is not None:
        stmt = stmt.where(r.tenant_id == tenant_id)
    return sorted((tuple(round(v, 6) if isinstance(v, float) else v for v in row)
                   for row in s.execute(stmt)), key=repr)


def test_rollup_written_by_the_stages_equals_direct_aggregation(make_tenant) -> None:
    tenant_id, _ = make_tenant(["customer", "agent"])  # both roles scored: the roles filter matters
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=EXAMPLE.name, media_uri=str(EXAMPLE),
                        channel_roles={"0": "agent", "1": "customer"},
                        meta={"agent": "ann", "queue": "billing"})
        s.add(rec)
        s.flush()
        rec_id, created = rec.id, rec.created_at
    settings = get_settings()
    followups = ingest.ingest(rec_id, settings)
    assert followups.infer_batches
    completed = [r for batch in followups.infer_batches for r in infer.infer(batch, settings).completed]
    assert completed == [rec_id]

    with transaction() as s:
        rows = _rows(s, tenant_id)
        assert {(row[1], row[2]) for row in rows} >= {("*", "*")}
        assert {row[1] for row in rows} - {"*"} == {"agent", "customer"}
        assert all(row[6:8] == ("ann", "billing") for row in rows)
        start, end = created - timedelta(days=1), created + timedelta(days=1)
        assert_rollup_matches_direct(s, tenant_id, start, end)
        (group,) = analytics.emotion_distribution(s, tenant_id, "agent", start, end, ["customer", "agent"])
        preds = s.scalar(select(text("count(*)")).select_from(Prediction).join(Segment)
                         .where(Segment.recording_id == rec_id))
        assert (group.key, group.calls, group.segments) == ("ann", 1, preds)

    # Idempotent: writing again (a redelivered completion) changes nothing.
    with transaction() as s:
        analytics.write_emotion_rollup(s, rec_id)
    with transaction() as s:
        assert _rows(s, tenant_id) == rows


def test_rollup_counts_calls_without_predictions_and_newest_predictions_only(make_tenant) -> None:
    tenant_id, _ = make_tenant()
    day = datetime(2026, 4, 1, 23, 59, tzinfo=UTC)
    store_call(tenant_id, day, {"agent": "ann"}, [("agent", None, 4.0, None)])  # nothing scored
    rec = store_call(tenant_id, day, {"queue": "billing"},
                     [("customer", "angry", 3.0, -0.7), ("customer", "neutral", 2.0, None)])
    rescore_last_customer_segment(rec, "sad", -0.3)
    store_call(tenant_id, day, {}, [("customer", "happy", 5.0, 0.5)], status="analyzing")  # not done
    with transaction() as s:
        start, end = day - timedelta(days=2), day + timedelta(days=2)
        assert_rollup_matches_direct(s, tenant_id, start, end)
        (group,) = analytics.emotion_distribution(s, tenant_id, "day", start, end)
        assert (group.key, group.calls, group.segments, sorted(group.labels)) == ("2026-04-01", 2, 2,
                                                                                 ["angry", "sad"])
        assert math.isclose(group.valence_sum, -1.0) and group.valence_n == 2


@pytest.fixture(params=["sqlite", "postgresql"])
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'backfill.db'}"
        return
    name = f"callpulse_test_backfill_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_backfill_equals_the_write_function(scratch_url: str) -> None:
    """Calls finished before migration 0004 get the rows write_emotion_rollup would write."""
    upgrade(scratch_url, "0003")
    engine = create_engine(scratch_url)
    tenant_id, created = uuid.uuid4(), datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
    with Session(engine) as s, s.begin():
        s.execute(text("INSERT INTO tenant (id, name, analyzed_roles, analyze_unknown_roles, created_at) "
                       "VALUES (:id, 'backfill', '[\"customer\"]', true, :at)"),
                  {"id": tenant_id.hex if scratch_url.startswith("sqlite") else tenant_id, "at": created})
        for i, (status, meta) in enumerate([("done", {"agent": "ann", "queue": "q1"}), ("done", {}),
                                            ("analyzing", {"agent": "bob"}), ("done", {"agent": "cid"})]):
            # Core inserts of the columns this test sets (plus Python-side defaults): the ORM would
            # also write columns that later migrations added and this revision lacks.
            rec_id = uuid.uuid4()
            s.execute(insert(Recording).values(id=rec_id, tenant_id=tenant_id, media_uri="/x.wav", meta=meta,
                                               status=status, created_at=created + timedelta(hours=i)))
            for index, (role, label) in enumerate([("customer", "angry"), ("customer", "neutral"),
                                                   ("agent", None), ("customer", "angry")][: 4 - i]):
                seg_id = uuid.uuid4()
                s.execute(insert(Segment).values(id=seg_id, recording_id=rec_id, index=index, speaker=role,
                                                 role=role, start_s=index * 3.0, end_s=index * 3.0 + 2.5))
                if label is None:
                    continue
                for version, newer_label in enumerate([label, "sad"][: 1 + (index == 1)]):
                    s.execute(insert(Prediction).values(
                        id=uuid.uuid4(), segment_id=seg_id, model_name="m", model_version=str(version),
                        label=newer_label, raw_label=newer_label, scores={},
                        valence=None if index == 3 else -0.5 * version, arousal=0.25,
                        confidence=0.9, created_at=created + timedelta(minutes=version)))
    upgrade(scratch_url)  # 0004: creates the rollup and backfills it
    with Session(engine) as s, s.begin():
        backfilled = _rows(s)
        recordings = s.scalars(select(Recording.id)).all()
        for rec_id in recordings:
            analytics.write_emotion_rollup(s, rec_id)
        s.execute(RecordingEmotionRollup.__table__.delete().where(  # the function ignores the status
            RecordingEmotionRollup.recording_id.in_(select(Recording.id).where(Recording.status != "done"))))
        written = _rows(s)
        assert backfilled == written
        assert len({row[0] for row in backfilled if row[1] == "*"}) == 3  # the done calls
        assert_rollup_matches_direct(s, tenant_id, created - timedelta(days=1), created + timedelta(days=1))
    engine.dispose()
