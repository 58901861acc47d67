"""What every FunASR-format release directory has in common, read without FunASR: `config.yaml`
(the model's constructor arguments), `model.pt` (a torch state dict, sometimes wrapped in
`{"state_dict": ...}` or `{"model": ...}`), and strict matching of that state dict against our own
module, so a checkpoint either loads completely or is refused with the keys that do not fit."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

WEIGHTS = "model.pt"
CONFIG = "config.yaml"
SHOWN = 8  # keys listed per problem in an error; the count says how many in all
# Containers FunASR's loader unwraps before reading the tensors (in this order).
WRAPPERS = ("state_dict", "model_state_dict", "model")


class CheckpointMismatch(ValueError):
    """The release's files do not hold the layout's weights (missing, unexpected or misshapen)."""


def release_dir(model_path: Path | None, backend: str) -> Path:
    """The directory a user downloaded, checked for the two files every release has."""
    if model_path is None:
        raise FileNotFoundError(f"backend {backend!r} needs a local release directory: set "
                                "CALLPULSE_MODEL_PATH or --model-path (no hub downloads)")
    path = Path(model_path).expanduser()
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a {backend} release directory (no {name}); "
                                    "point --model-path at the downloaded model directory")
    return path


def read_config(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load((path / CONFIG).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise CheckpointMismatch(f"{path / CONFIG} is not a mapping")
    return loaded


def read_weights(path: Path) -> dict[str, Any]:
    """The tensors of model.pt on the CPU (weights_only: a release file never runs code here)."""
    import torch

    loaded: Any = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    for wrapper in WRAPPERS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise CheckpointMismatch(f"{path / WEIGHTS} holds no state dict")
    state = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    # Data-parallel training saves every key under `module.`; FunASR strips it, so do we.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def listing(keys: Iterable[str]) -> str:
    ordered = sorted(keys)
    more = f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else ""
    return ", ".join(ordered[:SHOWN]) + more


def match(model: Mapping[str, Any], checkpoint: Mapping[str, Any], what: str,
          ignored_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checkpoint's tensors for the model, keyed as the model's state dict, after checking
    that every parameter is there with its shape and that nothing is left over. Keys under
    `ignored_prefixes` are parts of the release we never run (named by the caller)."""
    present = {k for k in checkpoint if not (ignored_prefixes and k.startswith(ignored_prefixes))}
    problems = []
    missing = set(model) - present
    unexpected = present - set(model)
    if missing:
        problems.append(f"{len(missing)} weights missing: {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights: {listing(unexpected)}")
    misshapen = [f"{k} {tuple(checkpoint[k].shape)} ≠ {tuple(model[k].shape)}"
                 for k in sorted(present & set(model)) if tuple(checkpoint[k].shape) != tuple(model[k].shape)]
    if misshapen:
        problems.append(f"{len(misshapen)} weights with another shape: {listing(misshapen)}")
    if problems:
        raise CheckpointMismatch(f"{what} checkpoint does not match its layout: " + "; ".join(problems))
    return {k: checkpoint[k] for k in model}


def version(path: Path, extra_files: Iterable[str] = ()) -> str:
    """`<directory name>@<hash8>` over model.pt and the files that change the answers (label list,
    CMVN, tokenizer): releases carry no name of their own beyond the directory they come in."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, *extra_files):
        file = path / name
        if not file.is_file():
            continue
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return f"{path.name}@{digest.hexdigest()[:8]}"
