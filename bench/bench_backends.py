"""Model-backend benchmark: segments/s and real-time factor per backend and batch size, with
randomly initialised checkpoints built on the spot (no downloads), on real speech segments cut from
the shipped example call.

Sizes: `small` stand-ins run on a laptop CPU in a minute or two; `real` uses the published
architectures (wav2vec2-large-sized classifier, Qwen2.5-Omni-3B thinker, HumanOmni-0.5B for r1-omni)
and is meant for a GPU. r1-omni segments carry 8 video frames (random pixels) as video calls do;
`--r1-audio-only` leaves them out.
Random weights almost never emit the end-of-sequence token, so omni generations run the full
`--max-new-tokens`: the figures are the worst case for that budget. The omni tokenizer is the
small test BPE (tests/backend_checkpoints.py), which needs fewer tokens for the prompt text than
Qwen's (about 100); the audio placeholders (25 per second) dominate the prompt length anyway.

    python bench/bench_backends.py [--device cpu|cuda] [--size small|real] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# wav2vec2-large (facebook/wav2vec2-large-*): 7-layer 512-channel conv front end, 24 x 1024 transformer.
CLASSIFIER_SIZES: dict[str, dict[str, Any]] = {
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 1024},
    "real": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
             "intermediate_size": 4096},
}
# Qwen2.5-Omni-3B thinker (Qwen/Qwen2.5-Omni-3B config.json): Whisper-large-sized audio encoder,
# 36-layer 2048-wide Qwen2.5 text model with 151,936-token vocabulary.
OMNI_SIZES: dict[str, dict[str, Any]] = {
    "small": {
        "audio": {"d_model": 256, "encoder_layers": 4, "encoder_attention_heads": 4, "encoder_ffn_dim": 1024},
        "text": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "mrope_section": [8, 12, 12]},
        "vocab_size": None,
    },
    "real": {
        "audio": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
                  "encoder_ffn_dim": 5120},
        "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                 "num_attention_heads": 16, "num_key_value_heads": 2, "mrope_section": [16, 24, 24]},
        "vocab_size": 151_936,
    },
}


def build_classifier(path: Path, size: str) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    from tests.backend_checkpoints import CLASSIFIER_LABELS

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        **CLASSIFIER_SIZES[size], feat_extract_norm="layer", do_stable_layer_norm=True,
        num_labels=len(CLASSIFIER_LABELS), id2label=dict(enumerate(CLASSIFIER_LABELS)),
        label2id={label: i for i, label in enumerate(CLASSIFIER_LABELS)},
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(path)
    return path


def build_omni(path: Path, size: str) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    from tests.backend_checkpoints import OMNI_SPECIAL_TOKENS, build_omni_tokenizer

    spec = OMNI_SIZES[size]
    build_omni_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in OMNI_SPECIAL_TOKENS}
    text = dict(spec["text"])
    mrope = text.pop("mrope_section")
    torch.manual_seed(0)
    config = Qwen2_5OmniThinkerConfig(
        audio_config={**spec["audio"], "num_mel_bins": 128, "output_dim": text["hidden_size"]},
        # The vision tower is loaded but idle for audio-only segments: keep it minimal.
        vision_config={"depth": 1, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                       "out_hidden_size": text["hidden_size"], "fullatt_block_indexes": [0]},
        text_config={**text, "vocab_size": spec["vocab_size"] or len(tokenizer),
                     "rope_scaling": {"type": "default", "rope_type": "default", "mrope_section": mrope}},
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
    )
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    if model.generation_config is not None:
        model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(path)
    return path


def build_r1_omni(path: Path, size: str) -> Path:
    from tests.r1_omni_checkpoint import HUMANOMNI_05B, ReleaseSizes, build_release

    small = ReleaseSizes(
        vision={"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                "num_attention_heads": 4, "image_size": 224, "patch_size": 16},
        lm={"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2},
        whisper={"d_model": 256, "encoder_layers": 4, "encoder_attention_heads": 4, "encoder_ffn_dim": 1024},
        bert={"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 1024},
        name="humanomni-small-random")
    return build_release(path, sizes=HUMANOMNI_05B if size == "real" else small)


def with_frames(items: list[Any], count: int = 8) -> list[Any]:
    """Video-call segments: `count` 640×360 frames each (random pixels; the cost is the same)."""
    from dataclasses import replace

    import numpy as np

    from worker.pipeline.contracts import VideoFrame

    rng = np.random.default_rng(0)
    return [replace(s, frames=[VideoFrame(s.start_s, rng.integers(0, 255, (360, 640, 3), dtype=np.uint8))
                               for _ in range(count)]) for s in items]


def segments(count: int, seconds: float) -> list[Any]:
    """`count` segments of `seconds` of real speech, cycling through the example call."""
    import numpy as np

    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.media import decode

    audio = decode.decode(ROOT / "callpulse" / "examples" / "demo_call.ogg", 16_000)
    length = int(seconds * 16_000)
    out = []
    for i in range(count):
        channel = audio.samples[i % audio.channels]
        start = (i * length // 2) % max(1, channel.size - length)
        out.append(SegmentInput(key=str(i), audio=channel[start: start + length].astype(np.float32),
                                sample_rate=16_000, start_s=start / 16_000, end_s=(start + length) / 16_000,
                                role="customer"))
    return out


def run(model: Any, items: list[Any], batch: int, device: str) -> dict[str, float]:
    import torch

    model.predict(items[:batch])  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        model.predict(items[i: i + batch])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    audio_s = sum(len(s.audio) / s.sample_rate for s in items)
    return {"batch": batch, "segments": len(items), "seconds": round(elapsed, 3),
            "segments_per_s": round(len(items) / elapsed, 2), "x_real_time": round(audio_s / elapsed, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--size", choices=("small", "real"), default="small")
    parser.add_argument("--backends", default="audio-classifier,omni,r1-omni")
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--classifier-batches", default="1,8,16")
    parser.add_argument("--classifier-segments", type=int, default=32)
    parser.add_argument("--omni-batches", default="1,4")
    parser.add_argument("--omni-segments", type=int, default=8)
    parser.add_argument("--r1-batches", default="1,4")
    parser.add_argument("--r1-segments", type=int, default=8)
    parser.add_argument("--r1-audio-only", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="callpulse-bench-backends-"))
    report: dict[str, Any] = {
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(), "threads": args.threads, "size": args.size,
        "segment_seconds": args.segment_seconds, "max_new_tokens": args.max_new_tokens, "results": [],
    }
    try:
        return _measure(args, work, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # real-size checkpoints are gigabytes


def _measure(args: argparse.Namespace, work: Path, report: dict[str, Any]) -> int:
    from worker.pipeline.voice.registry import load_backend

    wanted = args.backends.split(",")
    if "audio-classifier" in wanted:
        path = build_classifier(work / "classifier", args.size)
        model = load_backend("audio-classifier", path, args.device, args.dtype)
        items = segments(args.classifier_segments, args.segment_seconds)
        for batch in (int(b) for b in args.classifier_batches.split(",")):
            row = {"backend": "audio-classifier", **run(model, items, batch, args.device)}
            report["results"].append(row)
            print(json.dumps(row), flush=True)
        del model
    if "omni" in wanted:
        path = build_omni(work / "omni", args.size)
        model = load_backend("omni", path, args.device, args.dtype, max_new_tokens=args.max_new_tokens)
        items = segments(args.omni_segments, args.segment_seconds)
        for batch in (int(b) for b in args.omni_batches.split(",")):
            row = {"backend": "omni", **run(model, items, batch, args.device)}
            report["results"].append(row)
            print(json.dumps(row), flush=True)
        del model
    if "r1-omni" in wanted:
        path = build_r1_omni(work / "r1-omni", args.size)
        model = load_backend("r1-omni", path, args.device, args.dtype, max_new_tokens=args.max_new_tokens)
        items = segments(args.r1_segments, args.segment_seconds)
        if not args.r1_audio_only:
            items = with_frames(items)
        for batch in (int(b) for b in args.r1_batches.split(",")):
            row = {"backend": "r1-omni", "frames": 0 if args.r1_audio_only else 8,
                   **run(model, items, batch, args.device)}
            report["results"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
