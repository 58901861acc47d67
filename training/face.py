"""Train the face-expression CNN on FER2013 and export numpy weights + metadata.

python -m training.face --data DIR --out worker/weights --report FILE

DIR holds FER2013 as 48×48 JPEGs in <anything>/<emotion>/<Split>_<id>.jpg, Split one of Training,
PublicTest, PrivateTest (the file name decides the split, not the folder). Extra files such as
augmented copies (``Training_1.jpg3.jpg``) are ignored. Training uses Training only; PublicTest picks
the epoch and fits the temperature; PrivateTest is touched once, for the reported figures.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.calibration import expected_calibration_error, nll, softmax
from worker.pipeline.face.expression import (
    CROP_SIZE,
    INPUT_SIZE,
    WIDTHS,
    FaceDetector,
    FaceNet,
    standardize,
    tta_logits,
)
from worker.pipeline.labels import CANONICAL_LABELS, canonical

SPLITS = ("Training", "PublicTest", "PrivateTest")
NAME = re.compile(r"^(Training|PublicTest|PrivateTest)_\d+\.jpg$")
DEFAULT_CACHE = Path("/work/data/fer/fer2013_48x48.npy")
PIX = INPUT_SIZE * INPUT_SIZE


def build_cache(data: Path, cache: Path) -> np.ndarray:
    """One uint8 array (N, 48*48 + 2): pixels, canonical class index, split index."""
    if cache.exists():
        return np.load(cache, allow_pickle=False)
    rows = []
    for path in sorted(data.rglob("*.jpg")):
        if not NAME.match(path.name):
            continue
        label = canonical(path.parent.name)
        if label is None:
            raise ValueError(f"unknown emotion folder {path.parent}")
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None or img.shape != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"{path} is not a 48×48 image")
        split = SPLITS.index(path.name.split("_")[0])
        tail = [CANONICAL_LABELS.index(label), split]
        rows.append(np.concatenate([img.reshape(-1), tail]).astype(np.uint8))
    if not rows:
        raise ValueError(f"no FER2013 images under {data}")
    arr = np.stack(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random mirror, ±10° rotation, ±10 % scale, ±3 px shift, then a random 44×44 crop."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], torch.flip(x, dims=[3]), x)
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (3 / (INPUT_SIZE / 2))
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    row0 = torch.stack([cos, -sin, shift[:, 0]], 1)
    theta = torch.stack([row0, torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    ox, oy = (torch.randint(0, INPUT_SIZE - CROP_SIZE + 1, (2,), generator=gen)).tolist()
    return x[:, :, oy:oy + CROP_SIZE, ox:ox + CROP_SIZE]


def train_inputs(faces: np.ndarray) -> torch.Tensor:
    """Per-face standardised full 48×48 images (crop happens in augment)."""
    x = faces.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(x.std(axis=(1, 2), keepdims=True), 1.0)
    return torch.from_numpy(((x - mean) / std)[:, None])


@torch.inference_mode()
def predict_logits(net: FaceNet, faces: np.ndarray, batch: int = 512) -> np.ndarray:
    net.eval()
    x = torch.from_numpy(standardize(faces))
    return torch.cat([tta_logits(net, x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising NLL on a log grid, refined around the best (the method the shipped
    weights were calibrated with; kept so a rerun reproduces their version)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    best = min(grid, key=lambda t: nll(logits, y, float(t)))
    fine = np.linspace(best * 0.97, best * 1.03, 61)
    return float(min(fine, key=lambda t: nll(logits, y, float(t))))


def metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, object]:
    pred = probs.argmax(axis=1)
    recall = {c: float((pred[y == i] == i).mean()) for i, c in enumerate(CANONICAL_LABELS) if (y == i).any()}
    return {
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "uar": float(np.mean(list(recall.values()))),
        "recall": recall,
        "support": {c: int((y == i).sum()) for i, c in enumerate(CANONICAL_LABELS)},
        "confusion": [[int(((y == i) & (pred == j)).sum()) for j in range(len(CANONICAL_LABELS))]
                      for i in range(len(CANONICAL_LABELS))],
    }


def shipped_arrays(net: FaceNet) -> dict[str, np.ndarray]:
    """The weights as shipped: float16 halves the file, and every reported figure uses these."""
    return {k: v.detach().cpu().numpy().astype(np.float16) for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def export(arrays: dict[str, np.ndarray], out: Path, meta: dict[str, object]) -> str:
    digest = hashlib.sha256()
    for k in sorted(arrays):
        digest.update(k.encode())
        digest.update(np.ascontiguousarray(arrays[k]).tobytes())
    version = f"face-fer-v1+{digest.hexdigest()[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "face_expression.npz", **arrays)  # type: ignore[arg-type]
    (out / "face_expression.json").write_text(json.dumps({**meta, "version": version}, indent=2) + "\n")
    return version


def haar_geometry(faces: np.ndarray, n: int = 1500, seed: int = 0) -> dict[str, float]:
    """Where OpenCV's Haar box falls on FER2013 faces (sets face.HAAR_TO_FER_*).

    Each face is upscaled ×4 and edge-padded so the cascade sees it as in a video frame.
    """
    cascade = FaceDetector().cascade
    rng = np.random.default_rng(seed)
    side, pad = INPUT_SIZE * 4, INPUT_SIZE * 2
    sizes, dx, dy = [], [], []
    for i in rng.choice(len(faces), min(n, len(faces)), replace=False):
        img = cv2.resize(faces[i], (side, side), interpolation=cv2.INTER_CUBIC)
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = cascade.detectMultiScale(cv2.equalizeHist(img), 1.1, 5, minSize=(60, 60))
        if len(found) == 0:
            continue
        x, y, w, h = max(found, key=lambda b: b[2] * b[3])
        sizes.append(w / side)
        dx.append((x + w / 2 - pad - side / 2) / side)
        dy.append((y + h / 2 - pad - side / 2) / side)
    return {"n": float(min(n, len(faces))), "detected": float(len(sizes)),
            "haar_over_fer_side_median": float(np.median(sizes)),
            "haar_over_fer_side_q25": float(np.percentile(sizes, 25)),
            "haar_over_fer_side_q75": float(np.percentile(sizes, 75)),
            "centre_dx_median": float(np.median(dx)), "centre_dy_median": float(np.median(dy))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--checkpoint", type=Path, default=Path("/work/data/fer/face_ckpt.pt"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--haar-geometry", action="store_true",
                    help="only measure where the Haar box falls on FER2013 training faces, print it, exit")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    arr = build_cache(args.data, args.cache)
    faces = arr[:, :PIX].reshape(-1, INPUT_SIZE, INPUT_SIZE)
    labels, split = arr[:, PIX].astype(np.int64), arr[:, PIX + 1]
    if args.haar_geometry:
        print(json.dumps(haar_geometry(faces[split == 0], seed=args.seed)), flush=True)
        return
    tr, va, te = (split == 0), (split == 1), (split == 2)
    print(f"train {tr.sum()} public {va.sum()} private {te.sum()}", flush=True)
    x_tr, y_tr = train_inputs(faces[tr]), torch.from_numpy(labels[tr])

    net = FaceNet(WIDTHS, len(CANONICAL_LABELS)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    steps = math.ceil(len(y_tr) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps, pct_start=0.2
    )
    start, best_acc, best_state, history = 0, -1.0, None, []
    if args.checkpoint.exists():  # resume after a crash; the checkpoint is training scratch, never shipped
        ck = torch.load(args.checkpoint, weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start, best_acc, best_state, history = ck["epoch"], ck["best_acc"], ck["best_state"], ck["history"]
        gen.set_state(ck["gen"])
        print(f"resumed at epoch {start}", flush=True)
    t0 = time.time()
    for epoch in range(start, args.epochs):
        net.train()
        perm = torch.randperm(len(y_tr), generator=gen)
        total = 0.0
        for i in range(steps):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            xb = augment(x_tr[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net(xb), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = float((predict_logits(net, faces[va]).argmax(1) == labels[va]).mean())
        history.append({"epoch": epoch + 1, "train_loss": total / len(y_tr), "public_acc": acc,
                        "elapsed_s": round(time.time() - t0)})
        if acc > best_acc:
            best_acc, best_state = acc, copy.deepcopy(net.state_dict())
        print(json.dumps(history[-1]), flush=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1, "best_acc": best_acc, "best_state": best_state,
                    "history": history, "gen": gen.get_state()}, args.checkpoint)

    assert best_state is not None
    net.load_state_dict(best_state)
    arrays = shipped_arrays(net)
    net.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()}, strict=False)
    z_va, z_te = predict_logits(net, faces[va]), predict_logits(net, faces[te])
    temperature = fit_temperature(z_va, labels[va])
    p_raw, p_cal = softmax(z_te), softmax(z_te, temperature)
    report = {
        "data": "FER2013 (Training / PublicTest / PrivateTest as distributed)",
        "selection": {"best_epoch": max(history, key=lambda h: h["public_acc"])["epoch"],
                      "public_acc": best_acc},
        "temperature": temperature,
        "public_nll": {"before": nll(z_va, labels[va], 1.0), "after": nll(z_va, labels[va], temperature)},
        "public": metrics(softmax(z_va, temperature), labels[va]),
        "private": metrics(p_cal, labels[te]),
        "private_ece15": {"before": expected_calibration_error(p_raw, labels[te]),
                          "after": expected_calibration_error(p_cal, labels[te])},
        "private_nll": {"before": nll(z_te, labels[te], 1.0), "after": nll(z_te, labels[te], temperature)},
        "history": history,
        "config": {k: str(v) for k, v in vars(args).items()},
        "widths": list(WIDTHS),
    }
    priv = report["private"]
    assert isinstance(priv, dict)
    meta = {
        "name": "face-fer", "classes": list(CANONICAL_LABELS), "widths": list(WIDTHS),
        "input": f"{INPUT_SIZE}x{INPUT_SIZE} gray, centre {CROP_SIZE}x{CROP_SIZE}, "
                 "per-face standardised, mirror TTA",
        "temperature": temperature, "trained_on": "FER2013 Training", "selected_on": "FER2013 PublicTest",
        "metrics": {"private_test": {k: priv[k] for k in ("n", "accuracy", "uar", "recall")},
                    "private_test_ece15": report["private_ece15"]},
    }
    report["version"] = export(arrays, args.out, meta)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("version", "temperature", "private_ece15")}), flush=True)
    print(f"PrivateTest accuracy {priv['accuracy']:.4f} UAR {priv['uar']:.4f} (n={priv['n']})", flush=True)


if __name__ == "__main__":
    main()
