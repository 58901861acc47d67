"""Pipeline benchmark: `callpulse analyze` on a >= 30-min stereo call versus the bare model loop.

Builds the call by looping the shipped example (real speech) to the requested length, runs the
embedded pipeline in-process on a fresh SQLite database, then runs the same model over exactly the
segments the pipeline analyzed, in the same batch size, with nothing else around it.

    python bench/bench_pipeline.py [--minutes 30] [--transcript] [--json out.json]

--transcript also sends a transcript (one utterance every 3 s on each channel, 9 words each), so
every analyzed segment goes through the text model with its occlusion cues as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "callpulse" / "examples" / "demo_call.ogg"


def build_call(minutes: float, out: Path) -> None:
    loops = int(minutes * 60 // 36) + 1
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(EXAMPLE),
         "-t", str(minutes * 60), "-ar", "16000", "-c:a", "pcm_s16le", str(out)],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--transcript", action="store_true", help="send a transcript with the call")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-"))
    os.environ["CALLPULSE_DATA_DIR"] = str(work / "data")
    os.environ["CALLPULSE_DATABASE_URL"] = ""
    os.environ.pop("CALLPULSE_MEDIA_DIR", None)

    from sqlalchemy import select

    from callpulse.local import analyze_files
    from callpulse.settings import get_settings
    from db.models import Segment
    from db.session import transaction
    from worker import runtime
    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.media import audio_store, decode
    from worker.pipeline.speech import prosody
    from worker.pipeline.speech import vad as segment
    from worker.stages import ingest

    settings = get_settings()
    call = work / "call.wav"
    build_call(args.minutes, call)
    transcripts = {}
    if args.transcript:
        transcripts[call] = work / "call.json"
        utterances = [{"start": t, "end": t + 2.9, "channel": ch, "text": "I have called three times about "
                       "this bill already"} for ch in (0, 1) for t in range(0, int(args.minutes * 60) - 3, 3)]
        transcripts[call].write_text(json.dumps({"utterances": utterances}))

    # Model load is a once-per-process cost; keep it out of both timings.
    model = runtime.emotion_model(settings)
    vad = runtime.vad_model()

    t0 = time.perf_counter()
    # Both roles analyzed: the heaviest case (production default analyzes customers only).
    results = list(analyze_files([call], {0: "agent", 1: "customer"}, ["customer", "agent"], settings,
                                 show_progress=False, transcripts=transcripts))
    pipeline_s = time.perf_counter() - t0
    result = results[0]
    assert result["status"] == "done", result
    duration = float(result["duration_s"])

    # Stage costs, measured separately on the same file.
    t = time.perf_counter()
    audio = decode.decode(call, settings.sample_rate)
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    cfg = ingest.segmentation_config(settings)
    segs = segment.run(vad, audio, {0: "agent", 1: "customer"}, cfg)
    vad_s = time.perf_counter() - t
    t = time.perf_counter()
    for seg in segs:
        prosody.measure(audio_store.slice_mono(audio, seg.channel, seg.start_s, seg.end_s), audio.sample_rate)
    prosody_s = time.perf_counter() - t

    # Bare loop: the analyzed segments only, same audio slices, same batch size, no DB, no queue.
    with transaction() as s:
        stmt = (select(Segment.channel, Segment.start_s, Segment.end_s, Segment.role)
                .where(Segment.recording_id == uuid.UUID(result["recording_id"]), Segment.analyzed.is_(True))
                .order_by(Segment.index))
        rows = [tuple(row) for row in s.execute(stmt)]
    inputs = [SegmentInput(key=str(i), audio=audio_store.slice_mono(audio, ch, a, b),
                           sample_rate=audio.sample_rate, start_s=a, end_s=b, role=role)
              for i, (ch, a, b, role) in enumerate(rows)]
    t = time.perf_counter()
    for i in range(0, len(inputs), settings.infer_batch_size):
        model.predict(inputs[i: i + settings.infer_batch_size])
    bare_s = time.perf_counter() - t

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "audio_minutes": round(duration / 60, 2),
        "segments_total": len(result["segments"]),
        "segments_analyzed": len(inputs),
        "pipeline_s": round(pipeline_s, 1),
        "pipeline_x_realtime": round(duration / pipeline_s, 1),
        "pipeline_rtf": round(pipeline_s / duration, 4),
        "bare_model_s": round(bare_s, 1),
        "bare_model_x_realtime_of_analyzed_speech": round(sum(b - a for _, a, b, _ in rows) / bare_s, 1),
        "pipeline_over_bare_model": round(pipeline_s / bare_s, 2),
        "stage_decode_s": round(decode_s, 1),
        "stage_vad_s": round(vad_s, 1),
        "stage_prosody_s": round(prosody_s, 1),
        "batch_size": settings.infer_batch_size,
        "model_version": model.version,
        "transcript": bool(args.transcript),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
