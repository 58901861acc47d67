"""Peak worker memory of the ingest's heavy half (decode → VAD per channel → prosody per segment) on
a long call, as a multiple of the call's 16 kHz int16 size.

Builds the call by looping the shipped example (real speech, stereo Ogg/Opus) with stream copy, so
a 6-hour file takes seconds to make. Each measurement runs in a fresh child process that loads the
VAD model, resets its peak-RSS counter (/proc/self/clear_refs), then runs the stage code on the
file; VmHWM afterwards is the peak the stage itself added. File pages of the memory-mapped cache
count in that peak while mapped, so the figure is an upper bound on what the worker needs.

    python bench/bench_decode_memory.py [--hours 6] [--before-minutes 30] [--json out.json]
    python bench/bench_decode_memory.py --measure FILE      # one child measurement, JSON on stdout

--before-minutes also measures the previous decoder (pydub's whole-file decode at the source rate,
then one float32 copy) on a shorter call; 0 skips it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "callpulse" / "examples" / "demo_call.ogg"


def build_call(seconds: float, out: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(EXAMPLE), "-t",
                    str(seconds), "-c", "copy", str(out)], check=True)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measure(path: Path, before: bool = False) -> dict[str, float]:
    """Runs in the child: the stage code on ``path``, with the peak RSS it added."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from callpulse.settings import Settings
    from worker.pipeline.media import audio_store, decode
    from worker.pipeline.speech import prosody
    from worker.pipeline.speech import vad as segment
    from worker.stages import ingest

    settings = Settings()
    vad = segment.load_model()
    info = decode.probe(path)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
    start_rss = _status("VmRSS")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="callpulse-bench-") as folder:
        if before:
            audio = _previous_decoder(path, settings.sample_rate)
        else:
            audio = decode.decode_to_file(path, Path(folder) / "audio16k.npy", settings.sample_rate, info,
                                          decode.DecodeLimits.from_settings(settings))
        decode_s = time.perf_counter() - t0
        segs = segment.run(vad, audio, {0: "agent", 1: "customer"}, ingest.segmentation_config(settings))
        for seg in segs:
            prosody.measure(audio_store.slice_mono(audio, seg.channel, seg.start_s, seg.end_s),
                            audio.sample_rate)
        int16_bytes = int(audio.channels * audio.samples.shape[1] * 2)
        del audio
    peak = _status("VmHWM") - start_rss
    return {"duration_s": round(info.duration_s, 1), "channels": info.channels,
            "int16_bytes": int16_bytes, "peak_added_bytes": peak,
            "ratio_to_int16": round(peak / int16_bytes, 3), "segments": len(segs),
            "decode_s": round(decode_s, 1), "total_s": round(time.perf_counter() - t0, 1),
            "decoder": "pydub (previous)" if before else "ffmpeg → int16 memmap",
            "numpy": np.__version__}


def _previous_decoder(path: Path, sample_rate: int) -> object:
    """What the worker did before: the whole file through pydub, then one float32 copy."""
    import numpy as np
    from pydub import AudioSegment

    from worker.pipeline.contracts import DecodedAudio

    seg = AudioSegment.from_file(str(path)).set_frame_rate(sample_rate).set_sample_width(2)
    pcm = np.frombuffer(seg.raw_data, dtype=np.int16).reshape(-1, seg.channels)
    samples = np.empty((seg.channels, pcm.shape[0]), dtype=np.float32)
    samples[:] = pcm.T
    samples *= 1.0 / 32768.0
    del pcm, seg
    return DecodedAudio(samples=samples, sample_rate=sample_rate, duration_s=samples.shape[1] / sample_rate)


def child(path: Path, before: bool = False) -> dict[str, float]:
    args = [sys.executable, str(Path(__file__).resolve()), "--measure", str(path)]
    out = subprocess.run([*args, *(["--before"] if before else [])], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--before-minutes", type=float, default=30.0)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--before", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.before)))
        return
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="callpulse-bench-media-") as folder:
        call = Path(folder) / "long.ogg"
        build_call(args.hours * 3600, call)
        report["after"] = child(call)
        print(json.dumps(report["after"]), flush=True)
        if args.before_minutes > 0:
            short = Path(folder) / "short.ogg"
            build_call(args.before_minutes * 60, short)
            report["after_short"] = child(short)
            report["before_short"] = child(short, before=True)
            print(json.dumps(report["after_short"]), json.dumps(report["before_short"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
