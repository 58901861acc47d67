"""Strict weight loading for the r1-omni layout: every parameter the model has must come from a file,
with the right shape, and every tensor a file holds must have a place — or loading stops and says
which. The few allowed differences are named (`match_keys`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.pipeline import hf_common
from worker.pipeline.voice.generative.r1_omni import layout

TOWER_PREFIXES = (layout.VISION_PREFIX, layout.AUDIO_PREFIX)
# Buffers older saves wrote as weights (recomputed at construction): never a reason to refuse.
IGNORED_BUFFER_SUFFIXES = (".position_ids", "rotary_emb.inv_freq")
SHOWN = 8  # keys listed per problem in an error; the count says how many in all


class CheckpointMismatch(ValueError):
    """The files do not hold the layout's weights (missing, unexpected or misshapen tensors)."""


def read_state_dict(path: Path, keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """The tensors of a checkpoint directory (single file or shards) on the CPU: all of them, or
    those whose key `keep` accepts — read alone from safetensors files, so a tower directory's other
    parts (a Whisper decoder, a SigLIP text tower) are never loaded."""
    import torch

    state: dict[str, Any] = {}
    for file in hf_common.weight_files(path):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt", device="cpu") as tensors:
                for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    if keep is None or keep(key):
                        state[key] = tensors.get_tensor(key)
        else:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
            state.update({k: v for k, v in loaded.items() if keep is None or keep(k)})
    return state


def _listing(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def match_keys(model: Mapping[str, Any], checkpoint: Mapping[str, Any], *, tied: bool) -> set[str]:
    """Check a release checkpoint against the model's state dict; return the tower prefixes whose
    weights the checkpoint carries (the others come from the tower directories).

    Allowed: `lm_head.weight` absent when the embeddings are tied; a tower absent as a whole (the
    release loads towers from their own directories); the audio-classification head around the
    Whisper encoder, which is never run. Anything else missing, extra or misshapen is an error.
    """
    present = set(checkpoint)
    towers = set()
    problems = []
    for prefix in TOWER_PREFIXES:
        wanted = {k for k in model if k.startswith(prefix)}
        held = {k for k in present if k.startswith(prefix)}
        if held:
            towers.add(prefix)
            if wanted - held:
                problems.append(f"tower {prefix[:-1]} is partly in the checkpoint; missing "
                                f"{_listing(list(wanted - held))}")
    expected = {k for k in model if not k.startswith(TOWER_PREFIXES) or k.startswith(tuple(towers))}
    missing = expected - present - ({"lm_head.weight"} if tied else set())
    unexpected = {k for k in present - set(model)
                  if not k.startswith(layout.UNUSED_KEY_PREFIXES) and not k.endswith(IGNORED_BUFFER_SUFFIXES)}
    if missing:
        problems.append(f"{len(missing)} weights missing: {_listing(list(missing))}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights: {_listing(list(unexpected))}")
    misshapen = [f"{k} {tuple(checkpoint[k].shape)} ≠ {tuple(model[k].shape)}"
                 for k in sorted(present & set(model)) if tuple(checkpoint[k].shape) != tuple(model[k].shape)]
    if misshapen:
        problems.append(f"{len(misshapen)} weights with another shape: {_listing(misshapen)}")
    if problems:
        raise CheckpointMismatch(
            "r1-omni checkpoint does not match the HumanOmni layout: " + "; ".join(problems))
    return towers


def load_tower(module: Any, directory: Path, prefixes: Sequence[str], what: str) -> None:
    """Load a tower from its own directory: under the first prefix that holds all of the module's
    weights (a SigLIP directory also holds the text tower, a Whisper one the decoder: those are
    other models' parts and are left out; nothing of ours may be missing)."""
    wanted = module.state_dict()
    state = read_state_dict(directory, keep=lambda key: any(key[len(p):] in wanted for p in prefixes
                                                           if key.startswith(p)))
    for prefix in prefixes:
        picked = {k: state[prefix + k] for k in wanted if prefix + k in state}
        if len(picked) != len(wanted):
            continue
        misshapen = [k for k, v in picked.items() if tuple(v.shape) != tuple(wanted[k].shape)]
        if misshapen:
            raise CheckpointMismatch(
                f"r1-omni: {what} in {directory} has other shapes: {_listing(misshapen)}")
        module.load_state_dict(picked, strict=True)
        return
    best = max(prefixes, key=lambda p: sum(p + k in state for k in wanted))
    absent = [best + k for k in wanted if best + k not in state]
    raise CheckpointMismatch(f"r1-omni: {what} weights not found in {directory}: {_listing(absent)} missing")


def load_towers(lm: Any, vision_dir: Path, audio_dir: Path, in_checkpoint: set[str], *,
                audio_from_checkpoint: bool) -> None:
    """Towers as the release loads them: from their own directories, over any copies the checkpoint
    carries (those are the trainer's, possibly rounded to bf16). The checkpoint's copy is kept only
    where its directory has no weights, or for the audio tower when the config says it was trained
    (`unfreeze_mm_audio_tower`)."""
    towers = (
        (layout.VISION_PREFIX, lm.model.vision_tower.vision_tower, vision_dir, ("", "model."), "SigLIP",
         False),
        (layout.AUDIO_PREFIX, lm.model.audio_tower.audio_tower.encoder, audio_dir,
         ("model.encoder.", "encoder.", ""), "Whisper encoder", audio_from_checkpoint),
    )
    for prefix, module, directory, prefixes, what, prefer_checkpoint in towers:
        if prefix in in_checkpoint and (prefer_checkpoint or not hf_common.has_weights(directory)):
            continue
        if not hf_common.has_weights(directory):
            raise CheckpointMismatch(f"r1-omni: no {what} weights in the checkpoint nor in {directory}")
        load_tower(module, directory, prefixes, what)
