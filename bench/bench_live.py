"""Live-call latency: how long after a customer stops talking their `segment` event reaches the
client, and how long until the alert it fires arrives on the socket and at a webhook receiver.

Streams the shipped example call (36 s stereo of real speech; customer on channel 1) over
`/v1/live` at 1x real time (100 ms frames on the wall clock), `--streams` of them at once, starts
spread over `--stagger-s`, against a real `callpulse api` (one uvicorn process) and one
`callpulse worker --concurrency 1` with the embedded model. A rule that fires on every customer
turn makes each turn an alert, delivered to the socket and, signed, to a loopback webhook receiver.

Latency of a turn = arrival time − (stream start + the turn's end on the stream clock), the turn's
end being the segment's end less the VAD's 60 ms padding. It includes the VAD's wait for the
silence that closes a turn (CALLPULSE_MERGE_GAP_S, 0.6 s by default), queueing, inference, rules,
the socket's poll and, for webhooks, the notify queue.

Needs the local Postgres and Redis; creates and drops its own database; Redis db 5.

    python bench/bench_live.py [--streams 1 8 32] [--stagger-s 3] [--infer-max-batch 0] [--words]
                               [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_ADMIN = os.environ.get("CALLPULSE_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB_NAME = "callpulse_bench_live"
BROKER = os.environ.get("CALLPULSE_BENCH_BROKER", "redis://127.0.0.1:6379/5")
PAD_S = 0.06
FRAME_S = 0.1


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


class Webhooks:
    """Loopback receiver: arrival time of each alert.fired per (recording, fired_at_s)."""

    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, float], float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                now = time.time()
                payload = json.loads(body)
                if payload.get("type") == "alert.fired":
                    data = payload["data"]
                    outer.arrivals.setdefault((data["recording_id"], round(data["fired_at_s"], 3)), now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


async def _one_stream(ws_url: str, key: str, pcm: Any, delay: float, out: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    step = int(FRAME_S * 16000)
    async with connect(ws_url, additional_headers={"X-API-Key": key}, max_size=None) as ws:
        await ws.send(json.dumps({"event": "start", "encoding": "pcm_s16le", "sample_rate": 16000,
                                  "channels": 2, "channel_roles": {"0": "agent", "1": "customer"}}))
        started = json.loads(await ws.recv())
        out["recording_id"] = started["recording_id"]
        t0 = time.time()
        out["t0"] = t0
        out["segments"], out["alerts"] = [], []

        async def reader() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                now = time.time()
                if msg["event"] == "segment" and msg["role"] == "customer" and msg["label"]:
                    out["segments"].append(now - (t0 + msg["end_s"] - PAD_S))
                elif msg["event"] == "alert":
                    out["alerts"].append(now - (t0 + msg["fired_at_s"] - PAD_S))

        task = asyncio.create_task(reader())
        for i, start in enumerate(range(0, pcm.shape[0], step)):
            await ws.send(pcm[start: start + step].astype("<i2").tobytes())
            await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_S - time.time()))
        await asyncio.sleep(2.0)  # the last turn closes on silence, as on a real line
        await ws.send(json.dumps({"event": "stop"}))
        await asyncio.wait_for(task, timeout=300)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_s": _pct(values, 0.5), "p95_s": _pct(values, 0.95),
            "max_s": round(max(values), 3) if values else None,
            "mean_s": round(statistics.fmean(values), 3) if values else None}


async def _level(api_ws: str, key: str, pcm: Any, streams: int, stagger: float, hooks: Webhooks
                 ) -> dict[str, Any]:
    import random

    rng = random.Random(streams)
    outs: list[dict[str, Any]] = [{} for _ in range(streams)]
    done = await asyncio.gather(*(_one_stream(f"{api_ws}/v1/live", key, pcm, rng.uniform(0, stagger), o)
                                  for o in outs), return_exceptions=True)
    failures = [f"{type(d).__name__}: {d}" for d in done if isinstance(d, BaseException)]
    outs = [o for o in outs if "t0" in o]
    await asyncio.sleep(3.0)  # webhooks of the last turns
    hook_lat = []
    for o in outs:
        for (rec_id, fired_at_s), at in hooks.arrivals.items():
            if rec_id == o.get("recording_id"):
                hook_lat.append(at - (o["t0"] + fired_at_s - PAD_S))
    return {"streams": streams, "dropped": len(failures), "errors": sorted(set(failures))[:3],
            "segment_event": _summary([x for o in outs for x in o["segments"]]),
            "alert_socket": _summary([x for o in outs for x in o["alerts"]]),
            "alert_webhook": _summary(hook_lat)}


def api_side_speed(pcm: Any) -> float:
    """× real time of what the API process does per stream with no database or queue (decoding
    100 ms frames, appending them to disk, the streaming VAD on both channels), on one core."""
    import numpy as np

    from callpulse.settings import get_settings
    from worker.pipeline.media import live_audio
    from worker.pipeline.speech.stream_vad import StreamSegmenter, VadNet
    from worker.stages.ingest import segmentation_config

    folder = Path(tempfile.mkdtemp(prefix="callpulse-bench-live-api-"))
    decoder = live_audio.FrameDecoder(live_audio.Format("pcm_s16le", 16000, 2))
    writer = live_audio.LiveWriter(folder, 2)
    segmenter = StreamSegmenter(VadNet(), 2, segmentation_config(get_settings()))
    step = int(FRAME_S * 16000)
    started = time.perf_counter()
    batch: list[list[Any]] = []
    for i in range(0, pcm.shape[0], step):
        batch.append(decoder.decode(pcm[i: i + step].astype("<i2").tobytes()))
        if len(batch) == 2:  # 0.2 s per trip, as the socket handler gathers it
            joined = [np.concatenate([b[c] for b in batch]) for c in range(2)]
            writer.append(joined)
            segmenter.feed(joined)
            batch = []
    segmenter.finish()
    writer.close()
    return round(pcm.shape[0] / 16000 / (time.perf_counter() - started), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--stagger-s", type=float, default=3.0)
    parser.add_argument("--infer-max-batch", type=int, default=0,
                        help="CALLPULSE_INFER_MAX_BATCH for the worker: a task takes other streams' "
                             "waiting segments into its batch (0: one task, one message's segments)")
    parser.add_argument("--words", action="store_true",
                        help="words on live segments (CALLPULSE_LIVE_ASR_ENABLED, off by default): each "
                             "customer turn is transcribed before its inference")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-live-"))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME
    os.environ.update({"CALLPULSE_DATABASE_URL": url, "CALLPULSE_BROKER_URL": BROKER,
                       "CALLPULSE_MEDIA_DIR": str(work / "media"), "CALLPULSE_DATA_DIR": str(work / "data"),
                       "CALLPULSE_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
                       "CALLPULSE_LIVE_MAX_STREAMS_PER_TENANT": "256",
                       "CALLPULSE_INFER_MAX_BATCH": str(args.infer_max_batch),
                       "CALLPULSE_LIVE_ASR_ENABLED": "true" if args.words else "false"})
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    try:
        return _run(args, url)
    finally:
        from db.session import get_engine

        get_engine().dispose()
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def _run(args: argparse.Namespace, url: str) -> int:
    import httpx
    import redis

    from db.migrate import upgrade
    from db.queries.tenants import create_api_key, create_tenant
    from db.session import transaction
    from tests.live_support import pcm16, running_api
    from tests.support import EXAMPLE, running_worker

    upgrade(url)
    redis.Redis.from_url(BROKER).flushdb()
    with transaction() as s:
        tenant = create_tenant(s, "bench-live", ["customer"])
        _, key = create_api_key(s, tenant.id, "bench")
    pcm = pcm16(EXAMPLE)
    hooks = Webhooks()
    results = []
    with running_worker("bench-live", args=("--concurrency", "1")), running_api() as api:
        headers = {"X-API-Key": key}
        rule = {"name": "every customer turn", "definition": {
            "roles": ["customer"], "when": {"probability": {"label": "neutral", "min": 0.0}}}}
        httpx.post(f"{api.base}/v1/rules", headers=headers, json=rule).raise_for_status()
        httpx.post(f"{api.base}/v1/webhooks", headers=headers,
                   json={"url": hooks.url, "events": ["alert.fired"]}).raise_for_status()
        asyncio.run(_level(api.ws, key, pcm, 1, 0.0, hooks))  # warm-up: models load in both processes
        for streams in args.streams:
            result = asyncio.run(_level(api.ws, key, pcm, streams, args.stagger_s, hooks))
            results.append(result)
            print(json.dumps(result), flush=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "call_s": pcm.shape[0] / 16000,
              "load_average": os.getloadavg(), "infer_max_batch": args.infer_max_batch,
              "api_side_x_realtime": api_side_speed(pcm), "levels": results}
    print(json.dumps({k: v for k, v in report.items() if k != "levels"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
