"""CPU cost of the FunASR-release backends at their real sizes, with random weights (nothing is
downloaded here): `emotion2vec` at the emotion2vec / emotion2vec+ base size (the template config:
768 wide, 4 pre-net + 8 blocks, 12 heads, 7-layer conv front end) and `sensevoice` at
SenseVoice-Small's (560 → 512, 50 + 20 SAN-M blocks, 4 heads, 25,055-piece CTC vocabulary), each
through the production predict path (front end, batching, decoding, evidence) on real speech cut
from the example call. Random weights make the labels meaningless; the cost is the real one.

Reports parameters, CPU seconds per segment (process time: the figure that survives a shared
machine) and wall seconds, per batch size, on --threads torch threads.

    python bench/bench_funasr.py [--threads 1] [--seconds 5] [--segments 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _segments(count: int, seconds: float) -> list[Any]:
    import numpy as np

    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.media import decode
    from worker.pipeline.speech import prosody

    audio = decode.decode(ROOT / "callpulse" / "examples" / "demo_call.ogg", 16_000)
    mono = audio.samples[0]
    out = []
    for i in range(count):
        lo = int((0.5 + i * seconds) * 16_000) % max(1, mono.size - int(seconds * 16_000))
        wave = mono[lo : lo + int(seconds * 16_000)].astype(np.float32)
        out.append(
            SegmentInput(
                key=str(i),
                audio=wave,
                sample_rate=16_000,
                start_s=lo / 16_000,
                end_s=lo / 16_000 + seconds,
                role="customer",
                acoustics=prosody.measure(wave, 16_000),
            )
        )
    return out


def emotion2vec_model() -> Any:
    import torch

    from worker.pipeline.voice.funasr.emotion2vec import Emotion2vecModel
    from worker.pipeline.voice.funasr.emotion2vec_net import Emotion2vecConfig, Emotion2vecNet

    classes = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
    net = Emotion2vecNet(Emotion2vecConfig(), len(classes)).eval()
    return Emotion2vecModel(net, classes, "random-base@bench", torch.device("cpu"), torch.float32)


def sensevoice_model() -> Any:
    import torch

    from worker.pipeline.voice.funasr import fbank, spm
    from worker.pipeline.voice.funasr.sensevoice import (
        EMOTION_TAGS,
        EVENT_TAGS,
        LANGUAGES,
        SenseVoiceModel,
        tag,
    )
    from worker.pipeline.voice.funasr.sensevoice_net import SenseVoiceConfig, SenseVoiceNet

    tags = [tag(t) for t in (*LANGUAGES, *EMOTION_TAGS, *EVENT_TAGS, "withitn", "woitn")]
    size = SenseVoiceConfig().vocab_size
    pieces = ["<unk>", "<s>", "</s>"] + [f"\u2581w{i}" for i in range(size - 3 - len(tags))] + tags
    types = (
        [spm.UNKNOWN, spm.CONTROL, spm.CONTROL]
        + [spm.NORMAL] * (size - 3 - len(tags))
        + [spm.USER_DEFINED] * len(tags)
    )
    import numpy as np

    net = SenseVoiceNet(SenseVoiceConfig()).eval()
    cmvn = (np.full(560, -10.0, np.float32), np.full(560, 0.3, np.float32))
    return SenseVoiceModel(
        net,
        spm.Vocabulary(tuple(pieces), tuple(types)),
        fbank.FrontEnd(),
        cmvn,
        "random-small@bench",
        torch.device("cpu"),
        torch.float32,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    segments = _segments(args.segments, args.seconds)
    rows = []
    for name, build in (
        ("emotion2vec (base size)", emotion2vec_model),
        ("sensevoice (Small)", sensevoice_model),
    ):
        model = build()
        params = sum(p.numel() for p in model.net.parameters())
        model.predict(segments[:1])  # warm-up
        for batch in (int(b) for b in args.batches.split(",")):
            model.guard.max_batch = batch
            cpu, wall = time.process_time(), time.perf_counter()
            model.predict(segments)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            row = {
                "backend": name,
                "params_m": round(params / 1e6, 1),
                "batch": batch,
                "cpu_s_per_segment": round(cpu / len(segments), 3),
                "wall_s_per_segment": round(wall / len(segments), 3),
                "x_real_time_wall": round(args.seconds * len(segments) / wall, 1),
                "segment_s": args.seconds,
                "threads": args.threads,
                "load": os.getloadavg()[0],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
