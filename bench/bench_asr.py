"""Speech recognition cost, side by side in one run: `callpulse analyze` on a >= 30-min stereo call
without ASR and with it (the default), and the VAD and ASR stages alone on the same call.

The call loops the shipped example (real read speech on both channels) to the requested length, so
speech fills most of each channel: a busy call. Each pipeline run gets a fresh SQLite database;
models are loaded before the clocks start (a once-per-process cost). Wall seconds and this
process's CPU seconds (all threads) are recorded for every phase: on a shared machine CPU seconds
are the figure to compare. `--compare-vad` also runs the pipeline without ASR, and the VAD alone,
with the VAD as it was before its loudness gate and batching (silero's network called once per
window, every window), and reports how the segments differ.

    python bench/bench_asr.py [--minutes 30] [--json out.json] [--compare-vad]
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import build_call  # noqa: E402
from worker.pipeline.speech import vad_scoring  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--compare-vad", action="store_true",
                        help="also run the VAD as it was (one network call per window), side by side")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-asr-"))
    os.environ["CALLPULSE_DATA_DIR"] = str(work / "data")
    os.environ.pop("CALLPULSE_MEDIA_DIR", None)
    os.environ.pop("CALLPULSE_ASR_ENABLED", None)
    os.environ["CALLPULSE_DATABASE_URL"] = ""  # a fresh SQLite file under the data dir

    from callpulse.local import analyze_files
    from callpulse.settings import Settings
    from worker import runtime
    from worker.pipeline.media import decode
    from worker.pipeline.speech import asr
    from worker.pipeline.speech import vad as segment
    from worker.stages.ingest import segmentation_config

    call = work / "call.wav"
    build_call(args.minutes, call)
    roles = {0: "agent", 1: "customer"}
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def clocked(name: str, fn: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall[name], cpu[name] = time.perf_counter() - t, time.process_time() - c
        return out

    def pipeline(asr_on: bool) -> dict:
        settings = Settings(asr_enabled=asr_on)
        results = list(analyze_files([call], roles, ["customer"], settings, show_progress=False))
        return results[0]

    base = Settings()
    runtime.emotion_model(base)
    vad = runtime.vad_model()
    model = runtime.asr_model(base)
    gated = vad_scoring.window_probs

    no_asr = clocked("without_asr", lambda: pipeline(False))
    if args.compare_vad:
        vad_scoring.window_probs = vad_scoring.one_window_per_call
        clocked("without_asr_vad_one_window_per_call", lambda: pipeline(False))
        vad_scoring.window_probs = gated
    with_asr = clocked("with_asr", lambda: pipeline(True))
    assert no_asr["status"] == with_asr["status"] == "done", (no_asr.get("error"), with_asr.get("error"))
    duration = float(with_asr["duration_s"])

    audio = decode.decode(call, base.sample_rate)
    config = segmentation_config(base)
    segs = clocked("vad_alone", lambda: segment.run(vad, audio, roles, config))
    vad_compare: dict[str, Any] = {}
    if args.compare_vad:
        vad_scoring.window_probs = vad_scoring.one_window_per_call
        before = clocked("vad_alone_one_window_per_call", lambda: segment.run(vad, audio, roles, config))
        vad_scoring.window_probs = gated
        vad_compare = compare_segments(before, segs)
    spans = [asr.Span(s.channel, s.start_s, s.end_s) for s in segs]
    transcribe: Any = model.transcribe
    rows = clocked("asr_alone", lambda: transcribe(audio, roles, speech=spans,
                                                   batch_size=base.asr_batch_size))
    words = sum(len(r["words"]) for r in rows)

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "audio_minutes": round(duration / 60, 2),
        "speech_minutes_both_channels": round(sum(s.end_s - s.start_s for s in segs) / 60, 1),
        "asr_model": model.version,
        "asr_threads": base.asr_threads,
        "asr_batch_size": base.asr_batch_size,
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "x_realtime_wall": {k: round(duration / v, 1) for k, v in wall.items()},
        # CPU seconds of this process (all its threads): on a shared machine, wall time measures the
        # neighbours as much as the code; CPU time does not.
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "x_realtime_per_cpu_s": {k: round(duration / v, 1) for k, v in cpu.items()},
        "vad_segments_before_after": vad_compare,
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "words": words,
        "segments_with_words": sum(1 for s in with_asr["segments"] if s["words"]),
        "segments": len(with_asr["segments"]),
    }
    print(json.dumps(figures, indent=2))
    print()
    print("| phase | wall s | × real time (wall) | CPU s | audio s per CPU s |")
    print("| --- | --- | --- | --- | --- |")
    for name in wall:
        print(f"| {name} | {wall[name]:.1f} | {duration / wall[name]:.1f} | {cpu[name]:.1f} "
              f"| {duration / cpu[name]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def compare_segments(before: list, after: list) -> dict[str, Any]:
    """How the segments of the VAD as it was and as it is differ: counts, and for segments that
    pair up (same channel, overlapping) the largest start/end shift."""
    shifts = []
    for seg in after:
        match = [b for b in before
                 if b.channel == seg.channel and b.start_s < seg.end_s and seg.start_s < b.end_s]
        if match:
            best = min(match, key=lambda b: abs(b.start_s - seg.start_s) + abs(b.end_s - seg.end_s))
            shifts.append(max(abs(best.start_s - seg.start_s), abs(best.end_s - seg.end_s)))
    return {
        "segments_before": len(before), "segments_after": len(after), "paired": len(shifts),
        "identical": sum(1 for s in shifts if s < 1e-6),
        "max_shift_s": round(max(shifts, default=0.0), 3),
        "shifted_over_0_1_s": sum(1 for s in shifts if s > 0.1),
    }


if __name__ == "__main__":
    sys.exit(main())
