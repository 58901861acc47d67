"""Speech recognition cost, side by side in one run: `callpulse analyze` on a >= 30-min stereo call
without ASR and with it (the default), and the ASR stage alone on the same call.

The call loops the shipped example (real read speech on both channels) to the requested length, so
speech fills most of each channel: a busy call. Each pipeline run gets a fresh SQLite database;
models are loaded before the clocks start (a once-per-process cost).

    python bench/bench_asr.py [--minutes 30] [--json out.json]
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

from bench.bench_pipeline import build_call  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-asr-"))
    os.environ["CALLPULSE_DATA_DIR"] = str(work / "data")
    os.environ.pop("CALLPULSE_MEDIA_DIR", None)
    os.environ.pop("CALLPULSE_ASR_ENABLED", None)
    os.environ["CALLPULSE_DATABASE_URL"] = ""  # a fresh SQLite file under the data dir

    from callpulse.local import analyze_files
    from callpulse.settings import Settings
    from worker import runtime, stages
    from worker.pipeline.media import decode
    from worker.pipeline.speech import asr
    from worker.pipeline.speech import vad as segment

    call = work / "call.wav"
    build_call(args.minutes, call)
    roles = {0: "agent", 1: "customer"}

    cpu: dict[str, float] = {}

    def pipeline(asr_on: bool) -> tuple[float, dict]:
        settings = Settings(asr_enabled=asr_on)
        t0, c0 = time.perf_counter(), time.process_time()
        results = list(analyze_files([call], roles, ["customer"], settings, show_progress=False))
        cpu["with_asr" if asr_on else "without_asr"] = time.process_time() - c0
        return time.perf_counter() - t0, results[0]

    base = Settings()
    runtime.emotion_model(base)
    vad = runtime.vad_model()
    model = runtime.asr_model(base)

    no_asr_s, no_asr = pipeline(False)
    with_asr_s, with_asr = pipeline(True)
    assert no_asr["status"] == with_asr["status"] == "done", (no_asr.get("error"), with_asr.get("error"))
    duration = float(with_asr["duration_s"])

    audio = decode.decode(call, base.sample_rate)
    t = time.perf_counter()
    segs = segment.run(vad, audio, roles, stages.segmentation_config(base))
    vad_s = time.perf_counter() - t
    spans = [asr.Span(s.channel, s.start_s, s.end_s) for s in segs]
    t, c = time.perf_counter(), time.process_time()
    rows = model.transcribe(audio, roles, speech=spans, batch_size=base.asr_batch_size)  # type: ignore[union-attr]
    asr_s = time.perf_counter() - t
    cpu["asr_alone"] = time.process_time() - c
    words = sum(len(r["words"]) for r in rows)

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "audio_minutes": round(duration / 60, 2),
        "speech_minutes_both_channels": round(sum(s.end_s - s.start_s for s in segs) / 60, 1),
        "asr_model": model.version,
        "asr_threads": base.asr_threads,
        "asr_batch_size": base.asr_batch_size,
        "analyze_without_asr_s": round(no_asr_s, 1),
        "analyze_without_asr_x_realtime": round(duration / no_asr_s, 1),
        "analyze_with_asr_s": round(with_asr_s, 1),
        "analyze_with_asr_x_realtime": round(duration / with_asr_s, 1),
        "asr_alone_s": round(asr_s, 1),
        "asr_alone_x_realtime": round(duration / asr_s, 1),
        "vad_s": round(vad_s, 1),
        # CPU seconds of this process (all its threads): on a shared machine, wall time measures the
        # neighbours as much as the code; CPU time does not.
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "words": words,
        "segments_with_words": sum(1 for s in with_asr["segments"] if s["words"]),
        "segments": len(with_asr["segments"]),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
