"""Rules and webhooks benchmark.

1. Evaluation cost: 100 enabled rules of mixed kinds evaluated by the pure evaluator over a long
   synthetic call; reported per segment (all 100 rules) and per full re-evaluation (what one
   `callpulse.rules.evaluate_recording` task does on the predicted prefix).
2. Latency: a prediction row is committed, the evaluate task is enqueued exactly as the infer stage
   does after its commit, and a real worker (rules + notify queues) evaluates the tenant's 100
   rules, stores the alert and delivers the signed alert.fired webhook to a local HTTP receiver.
   Reported: time from the commit to the webhook's arrival, p50/p99.

Needs Postgres and Redis (the test services):

    python bench/bench_rules.py [--segments 400] [--samples 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("CALLPULSE_BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB_NAME = f"callpulse_bench_rules_{os.getpid()}"
BROKER = os.environ.get("CALLPULSE_BENCH_BROKER", "redis://127.0.0.1:6379/12")
LABELS = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")


def hundred_rules(exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A realistic mix: thresholds, sustained, trends, combinations (labels in ``exclude`` unused)."""
    labels = [name for name in LABELS if name not in exclude]
    rules: list[dict[str, Any]] = []
    for i in range(100):
        label = labels[i % len(labels)]
        kind = i % 5
        if kind == 0:
            when: dict[str, Any] = {"probability": {"label": label, "min": 0.8 + (i % 3) * 0.05}}
        elif kind == 1:
            when = {"sustained": {"seconds": 10 + i % 20, "condition": {"label": label}}}
        elif kind == 2:
            when = {"trend": {"metric": "valence", "drop": 0.4 + (i % 4) * 0.1, "within_s": 30 + i}}
        elif kind == 3:
            when = {"all": [{"valence": {"max": -0.5}}, {"arousal": {"min": 0.7}},
                            {"not": {"words": {"any": ["thank you"]}}}]}
        else:
            when = {"any": [{"sustained": {"segments": 3, "condition": {"label": [label, "disgust"]}}},
                            {"trend": {"metric": f"probability.{label}", "rise": 0.5, "within_s": 60}}]}
        rules.append({"roles": ["customer"], "cooldown_s": 60, "severity": "medium", "when": when})
    return rules


def bench_evaluation(segments: int) -> dict[str, float]:
    import random

    from worker.rules import Point, evaluate, parse_definition

    rng = random.Random(7)
    points = []
    for i in range(segments):
        label = rng.choice(LABELS)
        p = rng.uniform(0.3, 0.95)
        points.append(Point(index=i, role="customer", start_s=9.0 * i, end_s=9.0 * i + 8.0, label=label,
                            scores={name: (p if name == label else (1 - p) / 6) for name in LABELS},
                            valence=rng.uniform(-1, 1), arousal=rng.uniform(0, 1), confidence=p))
    definitions = [parse_definition(r) for r in hundred_rules()]
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        fired = sum(len(evaluate(d, points)) for d in definitions)
        runs.append(time.perf_counter() - started)
    best = min(runs)
    return {"segments": segments, "rules": len(definitions), "alerts_in_pass": fired,
            "full_pass_ms": round(best * 1000, 2),
            "per_segment_us_100_rules": round(best / segments * 1e6, 1),
            "per_segment_per_rule_us": round(best / segments / len(definitions) * 1e6, 2)}


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def bench_latency(samples: int) -> dict[str, float]:
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME
    os.environ.update({"CALLPULSE_DATABASE_URL": url, "CALLPULSE_BROKER_URL": BROKER,
                       "CALLPULSE_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"})
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    from db.migrate import upgrade

    upgrade(url)

    from db.models import Prediction, Recording, Segment, utcnow
    from db.queries import rules as rules_q
    from db.queries import webhooks as hooks_q
    from db.queries.tenants import create_tenant
    from db.session import transaction
    from worker.jobs.app import app
    from worker.jobs.enqueue import enqueue_rule_work
    from worker.notify import webhooks as notify

    arrivals: dict[str, float] = {}
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            now = time.time()
            rec_id = json.loads(body)["data"]["recording_id"]
            with arrived:
                arrivals[rec_id] = now
                arrived.notify_all()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with transaction() as s:
        tenant = create_tenant(s, f"bench-{uuid.uuid4().hex[:8]}")
        tenant_id = tenant.id
        hooks_q.create_endpoint(s, tenant_id, f"http://127.0.0.1:{server.server_address[1]}/hook",
                                ["alert.fired"], "bench", notify.new_secret())
        # 99 rules of the mix that never fire on these calls (their labels and thresholds are not
        # met) plus the one measured: 100 rules evaluated per task, one alert and one webhook.
        for i, definition in enumerate(hundred_rules(exclude=("neutral", "angry"))[:99]):
            rules_q.create_rule(s, tenant_id, f"mix {i}", "", True, definition, "medium")
        rules_q.create_rule(s, tenant_id, "angry", "", True, {"when": {"label": "angry"}}, "high")

    app.control.purge()
    log = Path(tempfile.mkdtemp()) / "worker.log"
    with log.open("wb") as fh:
        worker = subprocess.Popen(
            [sys.executable, "-m", "callpulse.cli", "worker", "--queues", "rules,notify", "--pool", "threads",
             "--concurrency", "4", "--loglevel", "WARNING", "--name", f"bench-{uuid.uuid4().hex[:6]}@%h"],
            stdout=subprocess.DEVNULL, stderr=fh, env=dict(os.environ), cwd=ROOT)
    latencies = []
    try:
        while not app.control.ping(timeout=1.0):
            if worker.poll() is not None:
                raise RuntimeError(log.read_text())
        for n in range(samples + 3):  # the first few warm the worker's connections and caches
            with transaction() as s:
                rec = Recording(tenant_id=tenant_id, filename="b.wav", media_uri="/dev/null",
                                status="analyzing")
                s.add(rec)
                s.flush()
                rec_id = rec.id
                segs = [Segment(recording_id=rec_id, index=i, speaker="c", role="customer", start_s=5.0 * i,
                                end_s=5.0 * i + 4.5) for i in range(12)]
                s.add_all(segs)
                s.flush()
                for seg in segs[:11]:
                    s.add(_prediction(Prediction, seg.id, "neutral", utcnow()))
            with transaction() as s:
                s.add(_prediction(Prediction, segs[11].id, "angry", utcnow()))
            committed = time.time()
            enqueue_rule_work([rec_id], [], [])  # what the infer task does right after its commit
            with arrived:
                if not arrived.wait_for(lambda r=str(rec_id): r in arrivals, timeout=30):
                    raise RuntimeError(f"no webhook for sample {n}: {log.read_text()[-2000:]}")
            if n >= 3:
                latencies.append(arrivals[str(rec_id)] - committed)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        server.shutdown()
        from db.session import get_engine

        get_engine().dispose()
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    latencies.sort()
    p99_index = min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))
    return {"samples": len(latencies), "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[p99_index] * 1000, 1), "max_ms": round(latencies[-1] * 1000, 1)}


def _prediction(model: Any, segment_id: uuid.UUID, label: str, at: Any) -> Any:
    scores = {name: (0.9 if name == label else 0.1 / 6) for name in LABELS}
    return model(segment_id=segment_id, model_name="bench", model_version="1", label=label, raw_label=label,
                 scores=scores, valence=-0.2 if label == "angry" else 0.1, arousal=0.6, confidence=0.9,
                 reasoning=[], reasoning_text="", created_at=at)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=400, help="segments in the synthetic call")
    parser.add_argument("--samples", type=int, default=100, help="webhook latency samples")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "evaluation": bench_evaluation(args.segments), "latency": bench_latency(args.samples)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
