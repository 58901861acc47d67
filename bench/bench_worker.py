"""Worker benchmark: segments/s through Celery and Redis — a real `callpulse worker` process on
Postgres doing ingest and inference — against the bare batched model loop over the same segments.

Calls are the shipped example looped to `--minutes`, stereo, both roles analyzed, sent at once as
`--calls` recordings. The worker runs the backend chosen by the usual settings
(CALLPULSE_MODEL_BACKEND / CALLPULSE_MODEL_PATH / CALLPULSE_DEVICE, default the embedded model) with
`--concurrency` processes. Figures:

* end to end: first ingest sent → last recording done (decode, VAD, prosody, queueing, inference,
  database writes, completion events);
* infer phase: first → last prediction row written, for the inference share alone;
* bare loop: the same model object a worker builds (`runtime.emotion_model`), in this process,
  `predict` over exactly the analyzed segments in `infer_batch_size` batches; nothing else.

Needs the local Postgres (admin URL as the tests use it) and Redis; creates and drops its own
database and uses Redis db 13.

    python bench/bench_worker.py [--calls 8] [--minutes 3] [--concurrency 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("CALLPULSE_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB_NAME = "callpulse_bench_worker"
BROKER = os.environ.get("CALLPULSE_BENCH_BROKER", "redis://127.0.0.1:6379/13")


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-worker-"))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME
    os.environ.update({"CALLPULSE_DATABASE_URL": url, "CALLPULSE_BROKER_URL": BROKER,
                       "CALLPULSE_MEDIA_DIR": str(work / "media"), "CALLPULSE_DATA_DIR": str(work / "data")})
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    try:
        return _run(args, work, url)
    finally:
        from db.session import get_engine

        get_engine().dispose()
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def _run(args: argparse.Namespace, work: Path, url: str) -> int:
    import redis
    from sqlalchemy import func, select

    from bench.bench_pipeline import build_call
    from callpulse.settings import get_settings
    from db.migrate import upgrade
    from db.models import Prediction, Recording, Segment
    from db.queries.tenants import create_tenant
    from db.session import transaction
    from tests.support import running_worker
    from worker import runtime
    from worker.jobs.app import app
    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.media import audio_store, decode

    upgrade(url)
    redis.Redis.from_url(BROKER).flushdb()
    settings = get_settings()
    call = work / "call.wav"
    build_call(args.minutes, call)
    with transaction() as s:
        tenant = create_tenant(s, "bench", ["customer", "agent"])  # both roles: the heaviest case
        ids = []
        for i in range(args.calls):
            rec = Recording(tenant_id=tenant.id, filename=f"call-{i}.wav", media_uri=str(call),
                            channel_roles={"0": "agent", "1": "customer"})
            s.add(rec)
            s.flush()
            ids.append(rec.id)

    with running_worker("bench", args=("--concurrency", str(args.concurrency)), ping_app=app,
                        timeout_s=600):
        started = time.perf_counter()
        for rec_id in ids:
            app.send_task("callpulse.ingest_recording", args=[str(rec_id)])
        deadline = started + args.timeout_s
        while True:
            with transaction() as s:
                states = list(s.scalars(select(Recording.status).where(Recording.id.in_(ids))))
            if all(state in ("done", "failed") for state in states):
                break
            if time.perf_counter() > deadline:
                raise SystemExit(f"timed out: {states}")
            time.sleep(0.2)
        end_to_end_s = time.perf_counter() - started
    assert all(state == "done" for state in states), states

    with transaction() as s:
        first, last, predictions = s.execute(select(
            func.min(Prediction.created_at), func.max(Prediction.created_at), func.count(Prediction.id))
            .join(Segment, Segment.id == Prediction.segment_id).where(Segment.recording_id.in_(ids))).one()
        rows = [(int(ch), float(a), float(b), str(role)) for ch, a, b, role in s.execute(
            select(Segment.channel, Segment.start_s, Segment.end_s, Segment.role)
            .where(Segment.recording_id == ids[0], Segment.analyzed.is_(True)).order_by(Segment.index))]
    infer_phase_s = (last - first).total_seconds()

    # Bare loop over the same segments (every call is the same audio: its segments, calls times).
    model = runtime.emotion_model(settings)
    audio = decode.decode(call, settings.sample_rate)
    one_call = [SegmentInput(key=str(i), audio=audio_store.slice_mono(audio, ch, a, b),
                             sample_rate=audio.sample_rate, start_s=a, end_s=b, role=role)
                for i, (ch, a, b, role) in enumerate(rows)]
    inputs = one_call * args.calls
    model.predict(inputs[: settings.infer_batch_size])  # warm-up, as the worker's was
    t = time.perf_counter()
    for i in range(0, len(inputs), settings.infer_batch_size):
        model.predict(inputs[i: i + settings.infer_batch_size])
    bare_s = time.perf_counter() - t

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "backend": settings.model_backend, "model_version": model.version,
        "calls": args.calls, "call_minutes": args.minutes, "worker_concurrency": args.concurrency,
        "infer_batch_size": settings.infer_batch_size, "infer_max_batch": settings.infer_max_batch,
        "segments": predictions,
        "worker_end_to_end_s": round(end_to_end_s, 1),
        "worker_end_to_end_segments_per_s": round(predictions / end_to_end_s, 2),
        "worker_infer_phase_s": round(infer_phase_s, 1),
        "worker_infer_phase_segments_per_s": round(predictions / infer_phase_s, 2) if infer_phase_s else None,
        "bare_model_s": round(bare_s, 1),
        "bare_model_segments_per_s": round(len(inputs) / bare_s, 2),
        "worker_over_bare_end_to_end": round((predictions / end_to_end_s) / (len(inputs) / bare_s), 3),
        "worker_over_bare_infer_phase": round((predictions / infer_phase_s) / (len(inputs) / bare_s), 3)
        if infer_phase_s else None,
        "audio_x_real_time_end_to_end": round(args.calls * args.minutes * 60 / end_to_end_s, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
