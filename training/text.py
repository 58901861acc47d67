"""Train the text emotion head on MELD (train), select on dev, calibrate on dev, report on test.

    python -m training.text --meld /work/data/meld --out worker/weights \
        --report /work/data/meld/text_report.json --cache-dir /work/data/meld/cache

MELD's `{train,dev,test}_sent_emo.csv` (Utterance, Emotion, ...) come from the declare-lab/MELD
repository. The encoder is frozen (the bundled all-MiniLM-L6-v2), so its embeddings are computed
once and cached; only the small head is trained here (torch at training time, numpy at inference).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.calibration import ECE_BINS, expected_calibration_error, fit_temperature
from worker.pipeline.contracts import Word
from worker.pipeline.labels import CANONICAL_LABELS, canonical
from worker.pipeline.text import emotion as te

SPLITS = ("train", "dev", "test")
WEIGHTINGS = ("none", "sqrt", "balanced")
LOGREG_C = (0.001, 0.003, 0.01, 0.03, 0.1)
MLP_HIDDEN = (256, 512)
MLP_CHECKPOINTS = (5, 10, 15, 20, 25, 30, 40)
MLP_WEIGHT_DECAY = 0.05
SEED = 13


def read_split(directory: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and canonical label indices of one MELD split. The CSVs are UTF-8 in the current
    repository, but older copies are Windows-1252: fall back rather than mangle the quotes."""
    raw = (directory / f"{split}_sent_emo.csv").read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("cp1252", errors="replace")
    texts: list[str] = []
    labels: list[int] = []
    for row in csv.DictReader(io.StringIO(content)):
        label = canonical(row["Emotion"])
        if label is None or label not in CANONICAL_LABELS:
            raise ValueError(f"{split}: unknown MELD emotion {row['Emotion']!r}")
        texts.append(te.normalise_text(row["Utterance"]))
        labels.append(CANONICAL_LABELS.index(label))
    return texts, np.asarray(labels, dtype=np.int64)


def embed_cached(encoder: te.SentenceEncoder, texts: list[str], cache: Path | None, key: str) -> np.ndarray:
    if cache is not None:
        path = cache / f"{key}.npy"
        if path.exists():
            data = np.load(path, allow_pickle=False)
            if data.shape == (len(texts), te.EMBEDDING_DIM):
                return data
    data = encoder.encode(texts)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{key}.npy", data)
    return data


def class_weights(y: np.ndarray, scheme: str) -> np.ndarray:
    counts = np.bincount(y, minlength=len(CANONICAL_LABELS)).astype(np.float64)
    if scheme == "none":
        w = np.ones_like(counts)
    else:
        w = counts.sum() / (len(counts) * np.maximum(counts, 1))
        w = np.sqrt(w) if scheme == "sqrt" else w
    return w / (w * counts).sum() * counts.sum()  # average sample weight 1: same loss scale


def _head(mean: np.ndarray, scale: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray]) -> (
    te.TextHead
):
    return te.TextHead(classes=CANONICAL_LABELS, mean=mean.astype(np.float32), scale=scale.astype(np.float32),
                       weights=tuple(w.astype(np.float32) for w in weights),
                       biases=tuple(b.astype(np.float32) for b in biases))


def train_logreg(x: np.ndarray, y: np.ndarray, weighting: str, c: float) -> te.TextHead:
    """Multinomial logistic regression with an L2 penalty (sklearn here; the arrays are shipped)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    fitted = LogisticRegression(C=c, max_iter=3000).fit(
        (x - mean) / scale, y, sample_weight=class_weights(y, weighting)[y]
    )
    if list(fitted.classes_) != list(range(len(CANONICAL_LABELS))):
        raise ValueError("every canonical label needs training examples")
    return _head(mean, scale, [fitted.coef_.T], [fitted.intercept_])


def train_mlp(x: np.ndarray, y: np.ndarray, weighting: str, hidden: int,
              checkpoints: tuple[int, ...] = MLP_CHECKPOINTS) -> dict[int, te.TextHead]:
    """One ReLU hidden layer with heavy dropout (MELD train is small); a head per checkpoint epoch,
    so the number of epochs is chosen on dev like any other hyper-parameter."""
    import torch

    torch.manual_seed(SEED)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.from_numpy(((x - mean) / scale).astype(np.float32))
    yt = torch.from_numpy(y)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Dropout(0.5), torch.nn.Linear(hidden, len(CANONICAL_LABELS)))
    weights = torch.tensor(class_weights(y, weighting), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=MLP_WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(SEED)
    heads: dict[int, te.TextHead] = {}
    for epoch in range(1, max(checkpoints) + 1):
        net.train()
        for batch in torch.randperm(len(yt), generator=generator).split(128):
            optimiser.zero_grad()
            loss_fn(net(xt[batch]), yt[batch]).backward()
            optimiser.step()
        if epoch in checkpoints:
            linears = [m for m in net if isinstance(m, torch.nn.Linear)]
            heads[epoch] = _head(mean, scale, [m.weight.detach().numpy().T.copy() for m in linears],
                                 [m.bias.detach().numpy().copy() for m in linears])
    return heads


def grid(x: np.ndarray, y: np.ndarray) -> list[tuple[dict[str, Any], te.TextHead]]:
    """Every candidate head with its configuration."""
    out: list[tuple[dict[str, Any], te.TextHead]] = []
    for weighting in WEIGHTINGS:
        for c in LOGREG_C:
            config: dict[str, Any] = {"family": "logreg", "weighting": weighting, "C": c}
            out.append((config, train_logreg(x, y, weighting, c)))
        for hidden in MLP_HIDDEN:
            for epochs, head in train_mlp(x, y, weighting, hidden).items():
                config = {"family": "mlp", "weighting": weighting, "hidden": hidden, "epochs": epochs}
                out.append((config, head))
    return out


def nll(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(probabilities[np.arange(len(y)), y] + 1e-12)))


def metrics(predicted: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, f1_score

    labels = list(range(len(CANONICAL_LABELS)))

    def f1(average: str) -> float:
        return round(float(f1_score(y, predicted, labels=labels, average=average, zero_division=0)), 4)

    matrix = confusion_matrix(y, predicted, labels=labels)
    support = matrix.sum(axis=1)
    recall = np.divide(np.diag(matrix), support, out=np.zeros(len(labels)), where=support > 0)
    return {
        "n": len(y),
        "accuracy": round(float((predicted == y).mean()), 4),
        "weighted_f1": f1("weighted"),
        "macro_f1": f1("macro"),
        "uar": round(float(recall[support > 0].mean()), 4),
        "recall": {c: round(float(r), 4) for c, r in zip(CANONICAL_LABELS, recall, strict=True)},
        "support": {c: int(s) for c, s in zip(CANONICAL_LABELS, support, strict=True)},
        "confusion": {"rows_true_cols_predicted": list(CANONICAL_LABELS), "matrix": matrix.tolist()},
    }


def evaluate(head: te.TextHead, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    raw = head.predict_proba(x, temperature=1.0)
    calibrated = head.predict_proba(x)
    out = metrics(calibrated.argmax(axis=1), y)
    out["ece_before"] = round(expected_calibration_error(raw, y), 4)
    out["ece_after"] = round(expected_calibration_error(calibrated, y), 4)
    out["nll_before"] = round(nll(raw, y), 4)
    out["nll_after"] = round(nll(calibrated, y), 4)
    # How much of the ECE change is resampling noise: 95 % bootstrap interval of (after - before).
    rng = np.random.default_rng(SEED)
    deltas = []
    for _ in range(200):
        i = rng.integers(0, len(y), len(y))
        ece = expected_calibration_error
        deltas.append(ece(calibrated[i], y[i]) - ece(raw[i], y[i]))
    out["ece_delta_95ci"] = [round(float(q), 4) for q in np.percentile(deltas, [2.5, 97.5])]
    return out


def _as_words(text: str) -> list[Word]:
    return [Word(i * 0.3, i * 0.3 + 0.25, token) for i, token in enumerate(text.split())]


def benchmark(meld: Path, weights: Path, n: int, batch: int = 16) -> dict[str, Any]:
    """Wall time of `predict` (with occlusion) per segment on MELD test text, in infer-sized batches,
    for short segments (one MELD utterance) and long ones (consecutive utterances, >= 30 words)."""
    texts = [t for t in read_split(meld, "test")[0] if t.split()]
    rng = np.random.default_rng(SEED)
    short = [_as_words(texts[i]) for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]
    long: list[list[Word]] = []
    joined = ""
    for text in texts:
        joined = f"{joined} {text}".strip()
        if len(joined.split()) >= 30:
            long.append(_as_words(joined))
            joined = ""
        if len(long) == max(n // 4, 1):
            break
    model = te.load_model("cpu", weights)
    model.predict(short[:batch])  # warm-up: first calls allocate
    out: dict[str, Any] = {"threads": _threads(), "batch": batch}
    for name, segments in (("short", short), ("long", long)):
        started = time.perf_counter()
        for first in range(0, len(segments), batch):
            model.predict(segments[first:first + batch])
        with_occlusion = (time.perf_counter() - started) * 1000 / len(segments)
        started = time.perf_counter()
        for first in range(0, len(segments), batch):
            chunk = segments[first:first + batch]
            model.head.predict_proba(model.encoder.encode([" ".join(w.text for w in s) for s in chunk]))
        plain = (time.perf_counter() - started) * 1000 / len(segments)
        out[name] = {"n": len(segments), "mean_words": round(float(np.mean([len(s) for s in segments])), 1),
                     "ms_per_segment": round(with_occlusion, 1),
                     "ms_per_segment_no_occlusion": round(plain, 1)}
    return out


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meld", type=Path, required=True, help="folder with MELD's *_sent_emo.csv")
    parser.add_argument("--out", type=Path, required=True, help="where text_emotion.{npz,json} go")
    parser.add_argument("--report", type=Path, required=True, help="JSON report (all configs, test figures)")
    parser.add_argument("--bench", type=int, default=0, metavar="N",
                        help="only time the head in --out on N MELD test segments, JSON to --report")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache of the MELD embeddings")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.bench:
        timing = benchmark(args.meld, args.out, args.bench)
        args.report.write_text(json.dumps(timing, indent=2) + "\n")
        print(json.dumps(timing))
        return 0
    started = time.time()
    model_dir = te.encoder_path()
    encoder_sha = te.file_sha256(model_dir / "model.safetensors")
    encoder = te.SentenceEncoder(model_dir)
    data = {}
    for split in SPLITS:
        texts, y = read_split(args.meld, split)
        x = embed_cached(encoder, texts, args.cache_dir, f"meld_{split}_{encoder_sha[:8]}")
        data[split] = (x, y)
        print(f"{split}: {len(y)} utterances embedded ({time.time() - started:.0f} s)", flush=True)
    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = data["train"], data["dev"], data["test"]

    # Model selection on dev only: the test split is touched only after it, by the chosen heads.
    runs: list[dict[str, Any]] = []
    heads: list[te.TextHead] = []
    for config, candidate in grid(x_train, y_train):
        dev = metrics(candidate.predict_proba(x_dev).argmax(axis=1), y_dev)
        runs.append({**config, "dev": {k: dev[k] for k in ("accuracy", "weighted_f1", "macro_f1", "uar")}})
        heads.append(candidate)
        print(json.dumps(runs[-1]), flush=True)

    # Macro-F1 rewards finding the rare emotions without flooding them with neutral speech;
    # weighted F1 (MELD's usual figure) is dominated by neutral, UAR ignores false alarms.
    def pick(indices: list[int]) -> int:
        return max(indices, key=lambda i: runs[i]["dev"]["macro_f1"])

    def calibrated(index: int) -> te.TextHead:
        temperature = fit_temperature(heads[index].logits(x_dev), y_dev)
        return replace(heads[index], temperature=temperature, encoder_sha256=encoder_sha)

    chosen = pick(list(range(len(runs))))
    best = runs[chosen]
    # Each weighting's dev-best head on test too, so the cost of class weighting is visible.
    comparison = {}
    for weighting in WEIGHTINGS:
        index = pick([i for i, r in enumerate(runs) if r["weighting"] == weighting])
        comparison[weighting] = {"config": runs[index], "test": evaluate(calibrated(index), x_test, y_test)}
    head = calibrated(chosen)
    test = evaluate(head, x_test, y_test)
    dev_fit = evaluate(head, x_dev, y_dev)  # where the temperature was fitted: in-sample for it
    calibration_keys = ("ece_before", "ece_after", "nll_before", "nll_after")
    majority = int(np.bincount(y_train).argmax())
    baseline = metrics(np.full_like(y_test, majority), y_test)
    recipe = {
        "encoder": te.ENCODER_NAME, "pooling": "mean over tokens, L2-normalised",
        **{k: v for k, v in best.items() if k != "dev"},
        "mlp_training": f"AdamW lr 1e-3, batch 128, weight decay {MLP_WEIGHT_DECAY}, dropout 0.2/0.5",
        "training_data": f"MELD train ({len(y_train)} utterances)",
        "selection": f"dev macro-F1 over {len(runs)} configs (MELD dev, {len(y_dev)} utterances)",
        "calibration": f"temperature fitted on MELD dev (NLL); ECE over {ECE_BINS} equal-width bins",
    }
    shipped_keys = ("n", "accuracy", "weighted_f1", "macro_f1", "uar", "recall",
                    "ece_before", "ece_after", "nll_before", "nll_after")
    head = replace(head, metadata={
        "recipe": recipe,
        "metrics": {"meld_test": {k: test[k] for k in shipped_keys},
                    "meld_dev_selected": best["dev"]},
        "metrics_note": "MELD test is held out: used once for the shipped head, never for selection",
    })
    weights_path, metadata_path = te.save_head(head, args.out)
    report = {"version": head.version, "temperature": head.temperature, "recipe": recipe, "test": test,
              "majority_baseline": {"label": CANONICAL_LABELS[majority], **baseline},
              "dev_calibration": {k: dev_fit[k] for k in calibration_keys},
              "weighting_comparison": comparison, "runs": runs,
              "n": {s: len(data[s][1]) for s in SPLITS}, "seconds": round(time.time() - started, 1)}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"shipped {head.version} (T={head.temperature:.3f}) to {weights_path} and {metadata_path}; "
          f"test wF1 {test['weighted_f1']} acc {test['accuracy']} UAR {test['uar']} "
          f"ECE {test['ece_before']} -> {test['ece_after']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
