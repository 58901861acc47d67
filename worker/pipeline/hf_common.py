"""Pieces every `transformers` backend needs: the import guard, device/dtype choice, a checkpoint
version, and the SegmentInput → model-rate audio step. Imports torch/transformers lazily so the
core package (embedded backend, API) works without the [gpu] extra."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

INSTALL_HINT = "pip install 'callpulse[gpu]'"
# Weight files in the order transformers itself prefers them; sharded checkpoints are identified
# by their index (which names every shard and its tensors).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class MissingDependency(ImportError):
    """transformers (or a piece of it) is not installed in this environment."""


def require_transformers() -> Any:
    """Import transformers or explain how to get it (the registry turns this into BackendUnavailable)."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependency(f"this backend needs transformers: {INSTALL_HINT}") from exc
    return transformers


def require_checkpoint_dir(model_path: Path | None, backend: str) -> Path:
    if model_path is None:
        raise FileNotFoundError(
            f"backend {backend!r} needs a local checkpoint directory: "
            "set CALLPULSE_MODEL_PATH or --model-path"
        )
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory (no config.json); no hub access here")
    return path


def resolve_device(device: str) -> torch.device:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available to this worker")
    return torch.device(device)


def resolve_dtype(device: torch.device, dtype: str) -> torch.dtype:
    """fp32 on CPU (half precision there is slow and lossy); on CUDA "auto" means bf16 where the
    card supports it (same range as fp32, no overflow in softmax/logits) and fp16 otherwise."""
    import torch

    if device.type != "cuda":
        return torch.float32
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


@dataclass(frozen=True)
class Checkpoint:
    """What every transformers backend resolves before loading: where, on what, in which dtype."""

    transformers: Any
    path: Path
    device: torch.device
    dtype: torch.dtype
    version: str


def open_checkpoint(model_path: Path | None, backend: str, device: str, dtype: str,
                    companions: Sequence[Path] = ()) -> Checkpoint:
    """`companions`: directories whose weights the model also loads (r1-omni's towers)."""
    transformers = require_transformers()
    path = require_checkpoint_dir(model_path, backend)
    torch_device = resolve_device(device)
    return Checkpoint(transformers, path, torch_device, resolve_dtype(torch_device, dtype),
                      checkpoint_version(path, companions))


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files: the single file, or every shard its index names."""
    for candidate in WEIGHT_FILES:
        weights = path / candidate
        if not weights.is_file():
            continue
        if candidate.endswith(".index.json"):
            shards = sorted(set(json.loads(weights.read_text())["weight_map"].values()))
            return [path / shard for shard in shards]
        return [weights]
    raise FileNotFoundError(f"no weights file in {path} (looked for {', '.join(WEIGHT_FILES)})")


def has_weights(path: Path) -> bool:
    return any((path / name).is_file() for name in WEIGHT_FILES)


def _weights_digest(files: list[Path]) -> str:
    # Every byte, not a sample: two fine-tunes may differ only in a small head. Reading the
    # weights once before loading costs about a second per GB and leaves them in the page cache
    # for from_pretrained, so worker start pays little extra.
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_version(path: Path, companions: Sequence[Path] = ()) -> str:
    """`<name>@<hash8>`: the config's `_name_or_path` (or the directory name) plus a short hash of
    the weights (all shards of a sharded checkpoint, and of any companion directories the model
    also loads), so two fine-tunes saved under the same name never share prediction rows. Call it
    before loading (see _weights_digest)."""
    name = path.name
    try:
        config = json.loads((path / "config.json").read_text())
        stored = str(config.get("_name_or_path") or "").strip()
        if stored and not Path(stored).is_absolute():  # an absolute path says where, not what
            name = stored
    except (OSError, ValueError):
        pass
    files = weight_files(path) + [f for extra in companions for f in weight_files(extra)]
    return f"{name}@{_weights_digest(files)[:8]}"


def warm_up(model: Any, sample_rate: int = 16_000) -> None:
    """One prediction on a second of low noise before the first task, so CUDA kernels, cuBLAS
    handles and the allocator are set up at worker start, not inside the first call's latency."""
    from worker.pipeline.contracts import SegmentInput

    noise = (np.random.default_rng(0).standard_normal(sample_rate) * 1e-3).astype(np.float32)
    model.predict([SegmentInput(key="warm-up", audio=noise, sample_rate=sample_rate, start_s=0.0,
                                end_s=1.0, role="unknown")])


def to_model_rate(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 at the checkpoint's rate (the pipeline runs at 16 kHz, as do most checkpoints)."""
    wave = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sample_rate != target_rate:
        import librosa

        wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=target_rate).astype(np.float32)
    return wave
