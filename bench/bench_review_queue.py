"""Review queue benchmark: GET /v1/review-queue as a tenant's history grows.

Creates a scratch Postgres database, migrates it and bulk-loads (COPY) one tenant's calls, each
with customer segments, one prediction per segment (a third with per-modality answers, some
disagreeing) and corrections on 2 % of the segments; times the endpoint through the real app
(in-process client) and the query's server-side execution time (EXPLAIN ANALYZE) at the first size,
then loads older calls until the history is ``--grow`` times larger and times it again. The queue
reads only the tenant's RECENT_CALLS most recent calls, so the two should be alike. The scratch
database is dropped at the end.

    python bench/bench_review_queue.py [--calls 600] [--segments 20] [--grow 10] [--samples 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("CALLPULSE_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB_NAME = f"callpulse_bench_review_{os.getpid()}"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
os.environ["CALLPULSE_DATABASE_URL"] = DB_URL

LABELS = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]
LABEL_WEIGHTS = [50, 12, 10, 12, 5, 4, 7]


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def load(tenant_id: uuid.UUID, calls: int, segments: int, newest: datetime, rng: random.Random) -> None:
    """``calls`` calls of the tenant, one a minute going back from ``newest``."""
    import psycopg

    seg_rows, pred_rows, label_rows = [], [], []
    with psycopg.connect(DB_URL.replace("postgresql+psycopg://", "postgresql://")) as conn, \
            conn.cursor() as cur:
        with cur.copy("COPY recording (id, tenant_id, external_id, filename, media_uri, size_bytes, "
                      "container, has_video, channels, channel_roles, metadata, duration_s, status, "
                      "attempts, created_at, updated_at, completed_at) FROM STDIN") as copy:
            for i in range(calls):
                rec_id, created = uuid.uuid4(), newest - timedelta(minutes=i)
                copy.write_row((rec_id, tenant_id, f"ext-{uuid.uuid4().hex[:10]}", "call.wav",
                                "/nonexistent/call.wav", 1000, "wav", False, 1, "{}", "{}", 5.0 * segments,
                                "done", 1, created, created, created))
                for index in range(segments):
                    seg_id = uuid.uuid4()
                    seg_rows.append((seg_id, rec_id, index, 1, "customer", "customer", 5.0 * index,
                                     5.0 * index + 4.0, True, "{}"))
                    label = rng.choices(LABELS, LABEL_WEIGHTS)[0]
                    modalities = ({"audio": {"label": label}, "text": {"label": rng.choice(LABELS)}}
                                  if rng.random() < 0.33 else {})
                    pred_rows.append((uuid.uuid4(), seg_id, "embedded", "1", label, label,
                                      json.dumps({label: 1.0}), rng.uniform(0.2, 1.0), "[]", "",
                                      json.dumps(modalities), created))
                    if rng.random() < 0.02:
                        label_rows.append((seg_id, tenant_id, label, "bench", created, created))
        with cur.copy("COPY segment (id, recording_id, index, channel, speaker, role, start_s, end_s, "
                      "analyzed, acoustics) FROM STDIN") as copy:
            for row in seg_rows:
                copy.write_row(row)
        with cur.copy("COPY prediction (id, segment_id, model_name, model_version, label, raw_label, scores, "
                      "confidence, reasoning, reasoning_text, modalities, created_at) FROM STDIN") as copy:
            for row in pred_rows:
                copy.write_row(row)
        with cur.copy("COPY segment_label (segment_id, tenant_id, label, labeled_by, created_at, updated_at) "
                      "FROM STDIN") as copy:
            for row in label_rows:
                copy.write_row(row)
        conn.commit()
        cur.execute("ANALYZE")


def measure(key: str, tenant_id: uuid.UUID, samples: int) -> dict[str, float]:
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from api.main import create_app
    from db.queries.review_queue import review_queue
    from db.session import transaction

    times = []
    with TestClient(create_app()) as client:
        for i in range(samples + 2):
            t0 = time.perf_counter()
            resp = client.get("/v1/review-queue?limit=20", headers={"X-API-Key": key})
            assert resp.status_code == 200 and len(resp.json()["items"]) == 20, resp.text[:300]
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
    # The statement itself, timed by the server: captured as sent, then run under EXPLAIN ANALYZE.
    captured: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        captured.append((statement, params))

    server = []
    with transaction() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", grab)
        try:
            review_queue(s, tenant_id, 20)
        finally:
            event.remove(engine, "before_cursor_execute", grab)
        statement, params = captured[-1]
        cursor = s.connection().connection.cursor()
        for _ in range(5):
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            server.append(float(cursor.fetchone()[0][0]["Execution Time"]))
        if os.environ.get("BENCH_PLAN"):
            cursor.execute("EXPLAIN (ANALYZE) " + statement, params)
            print("\n".join(row[0] for row in cursor.fetchall()), file=sys.stderr)
    times.sort()
    return {"endpoint_p50_ms": statistics.median(times),
            "endpoint_p95_ms": times[min(len(times) - 1, round(0.95 * len(times)) - 1)],
            "server_median_ms": statistics.median(server)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--segments", type=int, default=20, help="customer segments per call")
    parser.add_argument("--grow", type=int, default=10, help="history multiple for the second run")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()

    from db.migrate import upgrade

    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    try:
        upgrade(DB_URL)
        from db.queries.tenants import create_api_key, create_tenant
        from db.session import get_engine, transaction

        with transaction() as s:
            tenant = create_tenant(s, "bench")
            tenant_id, key = tenant.id, create_api_key(s, tenant.id, "bench")[1]
        rng = random.Random(11)
        now = datetime.now(UTC)
        load(tenant_id, args.calls, args.segments, now, rng)
        small = measure(key, tenant_id, args.samples)
        older = now - timedelta(minutes=args.calls)
        load(tenant_id, args.calls * (args.grow - 1), args.segments, older, rng)
        large = measure(key, tenant_id, args.samples)
        get_engine().dispose()
        print(json.dumps({"calls": args.calls, "segments_per_call": args.segments,
                          "small": small, f"history_x{args.grow}": large,
                          "loadavg": os.getloadavg()}, indent=2))
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
