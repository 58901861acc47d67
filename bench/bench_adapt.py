"""How long `callpulse adapt` takes for N labels, and where the time goes.

Writes a LABELS.csv of N clips from a RAVDESS speech folder (labels from the file names, speaker
column from the actor), then runs the real command in-process and times its parts: reading and
checking the CSV, decoding + feature extraction, the held-out estimate (5 grouped refits) and the
final fit + write. Nothing is cached between runs (features are extracted from the audio as a
contact center's would be).

    python bench/bench_adapt.py --ravdess DIR [--labels 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}


def write_csv(ravdess: Path, n: int, target: Path) -> int:
    files = sorted(ravdess.glob("Actor_*/03-01-*.wav"))[:n]
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "speaker"])
        for path in files:
            parts = path.stem.split("-")
            writer.writerow([str(path), RAVDESS_EMOTIONS[parts[2]], f"actor{parts[6]}"])
    return len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ravdess", type=Path, required=True, help="audio_speech_actors_01-24 folder")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import numpy as np

    from training import adapt_data, adaptation
    from worker.pipeline.voice.embedded import classifier
    from worker.pipeline.voice.embedded.model import load_model

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.csv"
        n = write_csv(args.ravdess, args.labels, labels)
        started = time.perf_counter()
        model = load_model().model
        spans = adapt_data.read_csv(labels, model.classes)
        timings["load model + read CSV"] = time.perf_counter() - started
        mark = time.perf_counter()
        x, used = adapt_data.extract(spans, log=lambda _: None)
        timings["decode + features"] = time.perf_counter() - mark
        data = adaptation.LabeledFeatures(x=x, y=np.array([spans[i].label for i in used]),
                                          groups=np.array([spans[i].group for i in used]))
        mark = time.perf_counter()
        report = {"held_out": adaptation.held_out(model, data), "base_version": model.version}
        timings["held-out estimate (grouped refits)"] = time.perf_counter() - mark
        mark = time.perf_counter()
        adapted, _ = adaptation.adapt(model, data, "bench", estimate=False, log=lambda _: None)
        classifier.save(adapted, Path(tmp) / "out")
        timings["final fit + write"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
    print(f"{n} labels")
    for name, seconds in timings.items():
        print(f"  {name:36s} {seconds:7.1f} s")
    print(adaptation.describe(report))
    if args.json:
        args.json.write_text(json.dumps({"labels": n, "timings_s": timings, "held_out": report["held_out"]},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
