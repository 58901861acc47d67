"""Analytics benchmark: /v1/analytics and the dashboard's calls list over 100k generated calls.

Creates a scratch Postgres database, migrates it, bulk-loads (COPY) one tenant's recordings with
customer and agent segments, a prediction per customer segment and alerts on a share of calls,
spread over 90 days, 50 agents and 8 queues. Then times each endpoint through the real ASGI app
(in-process HTTP client), first at migration 0003 with the emotion aggregates computed directly
from segments and predictions (emotion_distribution_direct, as before the rollup), then at head,
whose migration 0004 backfills the per-call rollup (timed) that emotion_distribution reads; checks
both give the same figures, and prints p50/p95 per endpoint. The scratch database is dropped at
the end.

    python bench/bench_analytics.py [--recordings 100000] [--samples 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("CALLPULSE_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB_NAME = f"callpulse_bench_analytics_{os.getpid()}"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
os.environ["CALLPULSE_DATABASE_URL"] = DB_URL
os.environ.setdefault("CALLPULSE_SESSION_SECRET", "bench-only-secret")

LABELS = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]
LABEL_WEIGHTS = [50, 12, 10, 12, 5, 4, 7]
DAYS, AGENTS, QUEUES = 90, 50, 8
CUSTOMER_SEGMENTS = AGENT_SEGMENTS = 3
ALERT_SHARE = 0.15


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def _pg_dsn() -> str:
    return DB_URL.replace("postgresql+psycopg://", "postgresql://")


def load(recordings: int, now: datetime) -> tuple[uuid.UUID, str]:
    """Bulk-load one tenant's calls with COPY; returns (tenant id, API key)."""
    import psycopg

    from db.queries.tenants import create_api_key, create_tenant
    from db.session import transaction

    with transaction() as s:
        tenant = create_tenant(s, "bench")
        _, key = create_api_key(s, tenant.id, "bench")
        tenant_id = tenant.id
        other = create_tenant(s, "other")  # a second tenant, so the tenant filter has work to do
        other_id = other.id
    rng = random.Random(7)
    rule_id, version_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(_pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO rule (id, tenant_id, name, description, enabled, current_version, created_at, "
            "updated_at) VALUES (%s, %s, 'angry customer', '', true, 1, now(), now())", (rule_id, tenant_id))
        cur.execute(
            "INSERT INTO rule_version (id, rule_id, version, definition, severity, created_at) "
            "VALUES (%s, %s, 1, '{\"when\": {\"label\": \"angry\"}}', 'high', now())", (version_id, rule_id))
        rec_cols = ("id, tenant_id, external_id, filename, media_uri, size_bytes, container, has_video, "
                    "channels, channel_roles, metadata, duration_s, status, attempts, created_at, "
                    "updated_at, completed_at")
        seg_rows: list[tuple] = []
        pred_rows: list[tuple] = []
        alert_rows: list[tuple] = []
        with cur.copy(f"COPY recording ({rec_cols}) FROM STDIN") as copy:
            for i in range(recordings + recordings // 10):
                owner = tenant_id if i < recordings else other_id
                rec_id = uuid.uuid4()
                created = now - timedelta(seconds=rng.uniform(0, DAYS * 86400))
                meta = {"agent": f"agent-{rng.randrange(AGENTS):02d}",
                        "queue": f"queue-{rng.randrange(QUEUES)}"}
                status = "done" if rng.random() < 0.97 else rng.choice(["failed", "analyzing"])
                copy.write_row((rec_id, owner, f"ext-{i}", "call.wav", "/nonexistent/call.wav", 1000, "wav",
                                False, 2, json.dumps({"0": "agent", "1": "customer"}), json.dumps(meta),
                                180.0, status, 1, created, created, created))
                t = 0.0
                for index in range(CUSTOMER_SEGMENTS + AGENT_SEGMENTS):
                    seg_id = uuid.uuid4()
                    role = "customer" if index % 2 else "agent"
                    start, end = t, t + rng.uniform(2.0, 9.0)
                    t = end + 1.0
                    seg_rows.append((seg_id, rec_id, index, index % 2, f"ch{index % 2}", role, start, end,
                                     role == "customer", None if role == "customer" else "policy", "{}"))
                    if role != "customer" or status != "done":
                        continue
                    label = rng.choices(LABELS, LABEL_WEIGHTS)[0]
                    valence = -0.7 if label in ("angry", "sad", "fear", "disgust") else rng.uniform(-0.2, 0.8)
                    pred_rows.append((uuid.uuid4(), seg_id, "embedded", "1", label, label,
                                      json.dumps({label: 0.7, "neutral": 0.3} if label != "neutral"
                                                 else {"neutral": 1.0}),
                                      valence, rng.uniform(0, 1), rng.uniform(0.3, 1.0), "[]", "", created))
                if owner == tenant_id and status == "done" and rng.random() < ALERT_SHARE:
                    alert_rows.append((uuid.uuid4(), tenant_id, rule_id, version_id, 1, rec_id, "seg-1",
                                       "high", 1, 1, 2.0, 6.0, 6.0, "[]", "open", created, ""))
        with cur.copy("COPY segment (id, recording_id, index, channel, speaker, role, start_s, end_s, "
                      "analyzed, skip_reason, acoustics) FROM STDIN") as copy:
            for row in seg_rows:
                copy.write_row(row)
        with cur.copy("COPY prediction (id, segment_id, model_name, model_version, label, raw_label, scores, "
                      "valence, arousal, confidence, reasoning, reasoning_text, created_at) FROM STDIN"
                      ) as copy:
            for row in pred_rows:
                copy.write_row(row)
        with cur.copy("COPY alert (id, tenant_id, rule_id, rule_version_id, rule_version, recording_id, "
                      "window_key, severity, first_segment_index, last_segment_index, start_s, end_s, "
                      "fired_at_s, evidence, state, fired_at, note) FROM STDIN") as copy:
            for row in alert_rows:
                copy.write_row(row)
        conn.commit()
        print(f"loaded {recordings} calls (+{recordings // 10} of another tenant), {len(seg_rows)} segments, "
              f"{len(pred_rows)} predictions, {len(alert_rows)} alerts", file=sys.stderr)
    return tenant_id, key


def endpoints(now: datetime) -> list[tuple[str, str]]:
    until = f"to={now.date() + timedelta(days=1)}T00:00:00Z"
    month = f"from={(now - timedelta(days=30)).date()}T00:00:00Z&{until}"
    quarter = f"from={(now - timedelta(days=DAYS)).date()}T00:00:00Z&{until}"
    return [
        ("emotions by day, 30 days", f"/v1/analytics/emotions?group_by=day&{month}"),
        ("emotions by agent, 30 days", f"/v1/analytics/emotions?group_by=agent&{month}"),
        ("emotions by queue, 30 days", f"/v1/analytics/emotions?group_by=queue&{month}"),
        ("emotions by day, 90 days (all 100k)", f"/v1/analytics/emotions?group_by=day&{quarter}"),
        ("alerts by day, 30 days", f"/v1/analytics/alerts?group_by=day&{month}"),
        ("alerts by agent, 30 days", f"/v1/analytics/alerts?group_by=agent&{month}"),
        ("alerts by queue, 90 days (all 100k)", f"/v1/analytics/alerts?group_by=queue&{quarter}"),
        ("dashboard calls list, first page", "/dashboard/recordings"),
        ("dashboard calls list, agent filter", "/dashboard/recordings?agent=agent-07"),
        ("dashboard calls list, queue + label filter", "/dashboard/recordings?queue=queue-3&label=angry"),
        ("dashboard overview, 14 days", "/dashboard"),
    ]


def measure(key: str, now: datetime, samples: int, direct: bool) -> dict[str, dict[str, float]]:
    """Times every endpoint; with ``direct``, the emotion aggregates skip the rollup (which does
    not exist yet at 0003) and join segments and predictions, as they did before it."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from db.queries import analytics

    results: dict[str, dict[str, float]] = {}
    rollup = analytics.emotion_distribution
    if direct:
        analytics.emotion_distribution = analytics.emotion_distribution_direct
    try:
        with TestClient(create_app()) as client:
            _measure(client, key, now, samples, results)
    finally:
        analytics.emotion_distribution = rollup
    return results


def _measure(client: TestClient, key: str, now: datetime, samples: int,
             results: dict[str, dict[str, float]]) -> None:
    form = client.get("/dashboard/login")  # the login form's CSRF token, as a browser gets it
    token = re.search(r'name="csrf_token" value="([^"]*)"', form.text)
    assert token is not None, form.text
    login = client.post("/dashboard/login", data={"api_key": key, "csrf_token": token.group(1)},
                        follow_redirects=False)
    assert login.status_code == 303, login.text
    for name, url in endpoints(now):
        headers = {"X-API-Key": key} if url.startswith("/v1/") else {}
        times = []
        for i in range(samples + 2):
            t0 = time.perf_counter()
            response = client.get(url, headers=headers)
            elapsed = (time.perf_counter() - t0) * 1000
            assert response.status_code == 200, (url, response.status_code, response.text[:300])
            if i >= 2:  # two warm-up requests
                times.append(elapsed)
        times.sort()
        results[name] = {"p50_ms": statistics.median(times),
                         "p95_ms": times[min(len(times) - 1, round(0.95 * len(times)) - 1)]}
        figures = results[name]
        print(f"  {name:45s} p50 {figures['p50_ms']:8.1f} ms   p95 {figures['p95_ms']:8.1f} ms",
              file=sys.stderr)


def check_same_figures(now: datetime) -> None:
    """The rollup must give exactly what the direct aggregation gives, for every grouping."""
    from db.models import Tenant
    from db.queries import analytics
    from db.session import transaction

    start, end = now - timedelta(days=DAYS + 1), now + timedelta(days=1)
    with transaction() as s:
        tenant_id = s.query(Tenant.id).filter_by(name="bench").scalar()
        for group_by in analytics.GROUP_BYS:
            rollup = analytics.emotion_distribution(s, tenant_id, group_by, start, end)
            direct = analytics.emotion_distribution_direct(s, tenant_id, group_by, start, end)
            assert [(g.key, g.calls, g.segments, g.valence_n, sorted(g.labels)) for g in rollup] == \
                [(g.key, g.calls, g.segments, g.valence_n, sorted(g.labels)) for g in direct], group_by
            for a, b in zip(rollup, direct, strict=True):
                assert math.isclose(a.seconds, b.seconds, rel_tol=1e-9), group_by
                assert math.isclose(a.valence_sum, b.valence_sum, rel_tol=1e-9, abs_tol=1e-9), group_by
    print("rollup and direct aggregation agree for day, agent and queue", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from db.migrate import upgrade

    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    try:
        upgrade(DB_URL, "0003")
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        _, key = load(args.recordings, now)
        print(f"bulk load took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        _vacuum_analyze()
        print("without the rollup (revision 0003, direct aggregation):", file=sys.stderr)
        before = measure(key, now, args.samples, direct=True)
        t0 = time.perf_counter()
        upgrade(DB_URL)  # 0004 creates the rollup and backfills it with one INSERT ... SELECT
        backfill_s = time.perf_counter() - t0
        print(f"migration 0004 (rollup backfill) took {backfill_s:.1f} s", file=sys.stderr)
        _vacuum_analyze()
        check_same_figures(now)
        print("with the rollup (head):", file=sys.stderr)
        after = measure(key, now, args.samples, direct=False)
    finally:
        from db.session import get_engine

        get_engine().dispose()
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    report = {"recordings": args.recordings, "samples": args.samples, "backfill_s": backfill_s,
              "without_rollup": before, "with_rollup": after}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("| endpoint | p95 at 0003 | p95 at head | p50 at head |\n| --- | --- | --- | --- |")
    for name in after:
        print(f"| {name} | {before[name]['p95_ms']:.0f} ms | {after[name]['p95_ms']:.0f} ms | "
              f"{after[name]['p50_ms']:.0f} ms |")
    return 0


def _vacuum_analyze() -> None:
    """What autovacuum does to a live database: statistics for the planner and a visibility map
    for index-only scans. Done up front so autovacuum does not run during the measurements."""
    from sqlalchemy import create_engine, text

    engine = create_engine(DB_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
