"""Train and evaluate the embedded speech-emotion model (the exact data recipe lives here).

    python -m worker.pipeline.emotion.training --ravdess DIR --emodb DIR [--out worker/weights/]
        [--cache-dir DIR] [--eval-only]

Recipe:
1. Features (`features.py`) for every clip, plus four augmented copies (noise, telephone band,
   pitch shift, tempo) that are only ever used for *training* speakers; cached per feature spec.
2. Model selection only by speaker-grouped 5-fold CV inside the training speakers
   (RAVDESS actors 01-20 + EmoDB speakers 03-14), scored by the mean of RAVDESS 8-class UAR and
   EmoDB 7-class UAR of the out-of-fold predictions.
3. Held-out report with the selected recipe trained on all training speakers: RAVDESS actors 21-24
   (8 classes, clean and telephone-band) and EmoDB speakers 15+16 (7 classes); plus EmoDB
   leave-one-speaker-out with the same recipe as a supplementary figure.
4. The shipped model: the same recipe on every speaker of both corpora; weights + JSON metadata.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from worker.pipeline.emotion import classifier, corpora, features, labels

AUGMENTATIONS: tuple[str, ...] = ("noise", "telephone", "pitch", "tempo")
RAVDESS_TEST_ACTORS = frozenset({21, 22, 23, 24})
EMODB_TEST_SPEAKERS = frozenset({15, 16})
FEATURE_SETS: dict[str, slice] = {
    "handcrafted": slice(0, features.BLOCKS.prosodic.stop),
    "embedding": features.BLOCKS.embedding,
    "all": slice(0, features.N_FEATURES),
}
SEED = 0
# Listening conditions scored in selection: studio, narrowband phone line, 15-30 dB SNR noise.
CONDITIONS: tuple[str, ...] = ("none", "telephone", "noise")
N_JOBS = 2  # folds in parallel; the build machine has two cores


@dataclass(frozen=True)
class Recipe:
    """One candidate: which columns, which classifier (and its knobs), with or without augmentation."""

    feature_set: str = "all"
    family: str = "logreg"  # logreg | mlp | svm-rbf (reference only: not exportable)
    c: float = 0.1  # inverse regularisation for logreg / svm
    hidden: int = 128
    alpha: float = 1e-2
    augment: tuple[str, ...] = ()  # augmented copies of the training speakers added to "none"

    @property
    def exportable(self) -> bool:
        return self.family in ("logreg", "mlp")


@dataclass
class Data:
    clips: list[corpora.Clip]
    x: dict[str, np.ndarray]  # augmentation name ("none", ...) -> (n_clips, N_FEATURES)
    y: np.ndarray = field(init=False)
    speakers: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.y = np.array([c.label for c in self.clips])
        self.speakers = np.array([c.speaker for c in self.clips])

    def mask(self, corpus: str, numbers: frozenset[int] | None = None) -> np.ndarray:
        return np.array(
            [c.corpus == corpus and (numbers is None or c.speaker_number in numbers) for c in self.clips]
        )

    def training_rows(self, rows: np.ndarray, augment: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        names = ("none", *augment)
        return np.vstack([self.x[n][rows] for n in names]), np.concatenate([self.y[rows]] * len(names))


def _estimator(recipe: Recipe) -> Any:
    if recipe.family == "logreg":
        return LogisticRegression(C=recipe.c, max_iter=3000, class_weight="balanced")
    if recipe.family == "mlp":
        return MLPClassifier(
            (recipe.hidden,),
            alpha=recipe.alpha,
            max_iter=100,
            batch_size=128,
            learning_rate_init=1e-3,
            random_state=SEED,
        )
    if recipe.family == "svm-rbf":
        return SVC(C=recipe.c, gamma="scale", class_weight="balanced", decision_function_shape="ovr")
    raise ValueError(f"unknown family {recipe.family!r}")


def fit(recipe: Recipe, x: np.ndarray, y: np.ndarray) -> classifier.SoftmaxClassifier | Any:
    """Fit; exportable families come back as the numpy forward pass we ship (so we evaluate it)."""
    columns = FEATURE_SETS[recipe.feature_set]
    scaler = StandardScaler().fit(x[:, columns])
    model = _estimator(recipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(x[:, columns]), y)
    if not recipe.exportable:
        return (columns, scaler, model)
    # Unused columns get a zero first-layer row, so every shipped model reads the full vector.
    mean = np.zeros(features.N_FEATURES)
    scale = np.ones(features.N_FEATURES)
    mean[columns], scale[columns] = scaler.mean_, scaler.scale_
    first = model.coef_.T if recipe.family == "logreg" else model.coefs_[0]
    full_first = np.zeros((features.N_FEATURES, first.shape[1]))
    full_first[columns] = first
    if recipe.family == "logreg":
        weights, biases = (full_first,), (model.intercept_,)
    else:
        weights = (full_first, *model.coefs_[1:])
        biases = tuple(model.intercepts_)
    return classifier.SoftmaxClassifier(
        classes=tuple(str(c) for c in model.classes_),
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=tuple(w.astype(np.float32) for w in weights),
        biases=tuple(b.astype(np.float32) for b in biases),
    )


def scores(model: Any, x: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-class scores (probabilities for exportable models, decision values for the SVM)."""
    if isinstance(model, classifier.SoftmaxClassifier):
        return model.predict_proba(x), model.classes
    columns, scaler, svm = model
    return svm.decision_function(scaler.transform(x[:, columns])), tuple(str(c) for c in svm.classes_)


def restricted_predictions(values: np.ndarray, classes: Sequence[str], allowed: Sequence[str]) -> np.ndarray:
    """Argmax over the evaluated corpus's own classes (e.g. no "boredom" on RAVDESS)."""
    index = [list(classes).index(c) for c in allowed]
    return np.array(allowed)[np.argmax(values[:, index], axis=1)]


def war_uar(truth: np.ndarray, predicted: np.ndarray, allowed: Sequence[str]) -> dict[str, float]:
    recalls = [float(np.mean(predicted[truth == c] == c)) for c in allowed if np.any(truth == c)]
    return {"war": float(np.mean(truth == predicted)), "uar": float(np.mean(recalls)), "n": int(truth.size)}


def confusion(truth: np.ndarray, predicted: np.ndarray, allowed: Sequence[str]) -> list[list[int]]:
    return [[int(np.sum((truth == t) & (predicted == p))) for p in allowed] for t in allowed]


def canonical_accuracy(probabilities: np.ndarray, classes: Sequence[str], truth: np.ndarray) -> float:
    """What the product shows: canonical argmax after folding (calm/boredom -> neutral)."""
    folded = [labels.to_canonical_scores(dict(zip(classes, row, strict=True))) for row in probabilities]
    predicted = np.array([max(f, key=f.__getitem__) for f in folded])
    expected = np.array([labels.canonical(t) for t in truth])
    return float(np.mean(predicted == expected))


def evaluate(
    model: Any, data: Data, rows: np.ndarray, corpus: str, augmentation: str = "none"
) -> dict[str, Any]:
    allowed = corpora.RAVDESS_CLASSES if corpus == "ravdess" else corpora.EMODB_CLASSES
    values, classes = scores(model, data.x[augmentation][rows])
    predicted = restricted_predictions(values, classes, allowed)
    out: dict[str, Any] = war_uar(data.y[rows], predicted, allowed)
    out["confusion"] = {
        "classes": list(allowed),
        "rows_true_cols_pred": confusion(data.y[rows], predicted, allowed),
    }
    if isinstance(model, classifier.SoftmaxClassifier):
        out["canonical_accuracy"] = canonical_accuracy(values, classes, data.y[rows])
    return out


def cross_validate(recipe: Recipe, data: Data, rows: np.ndarray, folds: int = 5) -> dict[str, Any]:
    """Speaker-grouped CV inside `rows`: out-of-fold UAR per corpus and listening condition.

    The score averages clean, telephone-band and noisy versions of the validation speakers,
    because contact-center audio is narrowband and noisy: a model that is best on studio clips
    only is not the model to ship.
    """
    index = np.flatnonzero(rows)
    splits = list(GroupKFold(n_splits=folds).split(index, groups=data.speakers[index]))

    def run_fold(train_idx: np.ndarray, val_idx: np.ndarray) -> list[tuple[np.ndarray, tuple[str, ...]]]:
        train_rows = np.zeros(len(data.clips), dtype=bool)
        train_rows[index[train_idx]] = True
        model = fit(recipe, *data.training_rows(train_rows, recipe.augment))
        return [scores(model, data.x[condition][index[val_idx]]) for condition in CONDITIONS]

    outputs = Parallel(n_jobs=N_JOBS)(delayed(run_fold)(t, v) for t, v in splits)
    result: dict[str, Any] = {}
    pooled: list[np.ndarray] = []
    classes: tuple[str, ...] = ()
    for c_index, condition in enumerate(CONDITIONS):
        oof: dict[int, np.ndarray] = {}
        for (_, val_idx), per_condition in zip(splits, outputs, strict=True):
            values, classes = per_condition[c_index]
            oof.update(zip(index[val_idx].tolist(), values, strict=True))
        for corpus, allowed in (("ravdess", corpora.RAVDESS_CLASSES), ("emodb", corpora.EMODB_CLASSES)):
            ids = [int(i) for i in index if data.clips[i].corpus == corpus]
            predicted = restricted_predictions(np.stack([oof[i] for i in ids]), classes, allowed)
            result[f"{corpus}/{condition}"] = war_uar(data.y[ids], predicted, allowed)
        pooled.append(np.stack([oof[int(i)] for i in index]))
    result["score"] = float(np.mean([v["uar"] for v in result.values()]))
    result["oof"] = (np.vstack(pooled), classes, np.concatenate([data.y[index]] * len(CONDITIONS)))
    return result


def fit_temperature(probabilities: np.ndarray, classes: Sequence[str], truth: np.ndarray) -> float:
    """Temperature minimising out-of-fold NLL: makes "confidence 0.7" mean roughly 70%."""
    logp = np.log(np.clip(probabilities, 1e-12, 1.0))
    target = np.array([list(classes).index(t) for t in truth])
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.3), np.log(4.0), 80)):
        z = logp / t
        z -= z.max(axis=1, keepdims=True)
        nll = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(target)), target]))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def candidates() -> list[Recipe]:
    """Small, staged grid (2 CPU cores): block ablation, then classifier family and strength."""
    grid = [Recipe(feature_set=s, c=0.1) for s in ("handcrafted", "embedding")]
    for augment in ((), AUGMENTATIONS):
        grid += [Recipe(c=c, augment=augment) for c in (0.003, 0.01, 0.03, 0.1)]
        grid += [Recipe(family="mlp", alpha=a, augment=augment) for a in (1.0, 3.0)]
        grid += [Recipe(family="svm-rbf", c=10.0, augment=augment)]
    # Which augmentations matter: the channel ones alone vs adding the voice ones.
    grid += [Recipe(family="mlp", alpha=1.0, augment=("noise", "telephone"))]
    grid += [Recipe(family="mlp", alpha=1.0, hidden=256, augment=AUGMENTATIONS)]
    return grid


def _recipe_from_json(fields: dict[str, Any]) -> Recipe:
    if "augment" in fields:
        fields = {**fields, "augment": tuple(fields["augment"])}
    unknown = set(fields) - set(Recipe.__dataclass_fields__)
    if unknown or not Recipe(**fields).exportable:
        raise SystemExit(f"--recipe: unknown fields {sorted(unknown)} or a family that cannot be shipped")
    return Recipe(**fields)


def load_data(ravdess: Path, emodb: Path, cache_dir: Path) -> Data:
    clips = corpora.list_ravdess(ravdess) + corpora.list_emodb(emodb)
    if not clips:
        raise SystemExit(f"no clips found under {ravdess} / {emodb}")
    x = {name: corpora.cached_features(clips, name, cache_dir) for name in ("none", *AUGMENTATIONS)}
    return Data(clips, x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callpulse train", description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, required=True, help="audio_speech_actors_01-24 directory")
    parser.add_argument("--emodb", type=Path, required=True, help="EmoDB wav/ directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "weights")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "callpulse" / "ser-features"
    )
    parser.add_argument("--eval-only", action="store_true", help="select and evaluate, write no weights")
    parser.add_argument("--report", type=Path, help="also write the full report (JSON) here")
    parser.add_argument(
        "--recipe",
        type=json.loads,
        help='skip the grid and use this one recipe, e.g. \'{"family": "logreg", "c": 0.01}\' '
        "(it is still cross-validated, for its temperature and CV figures)",
    )
    args = parser.parse_args(argv)
    started = time.time()
    data = load_data(args.ravdess, args.emodb, args.cache_dir)
    rav_test = data.mask("ravdess", RAVDESS_TEST_ACTORS)
    emo_test = data.mask("emodb", EMODB_TEST_SPEAKERS)
    train_rows = ~rav_test & ~emo_test

    print(f"model selection: {len(set(data.speakers[train_rows]))} training speakers, grouped 5-fold CV")
    cv_table: list[dict[str, Any]] = []
    best: tuple[float, Recipe, Any] | None = None
    grid = [_recipe_from_json(args.recipe)] if args.recipe else candidates()
    for recipe in grid:
        result = cross_validate(recipe, data, train_rows)
        row = {
            **asdict(recipe),
            **{f"{k}_uar": v["uar"] for k, v in result.items() if isinstance(v, dict)},
            "score": result["score"],
        }
        cv_table.append(row)
        summary = "  ".join(f"{k} {v['uar']:.3f}" for k, v in result.items() if isinstance(v, dict))
        print(f"  {recipe}: score {result['score']:.3f} | UAR {summary}", flush=True)
        if recipe.exportable and (best is None or result["score"] > best[0]):
            best = (result["score"], recipe, result["oof"])
    assert best is not None
    _, recipe, oof = best
    temperature = fit_temperature(*oof)
    print(f"selected {recipe} (CV score {best[0]:.3f}); temperature {temperature:.2f}")

    model = fit(recipe, *data.training_rows(train_rows, recipe.augment))
    model = classifier.SoftmaxClassifier(**{**model.__dict__, "temperature": temperature})
    held_out = {
        "ravdess_actors_21_24": evaluate(model, data, rav_test, "ravdess"),
        "ravdess_actors_21_24_telephone": evaluate(model, data, rav_test, "ravdess", "telephone"),
        "ravdess_actors_21_24_noise": evaluate(model, data, rav_test, "ravdess", "noise"),
        "emodb_speakers_15_16": evaluate(model, data, emo_test, "emodb"),
    }
    rav_train = data.mask("ravdess") & ~rav_test

    def loso_fold(speaker: int) -> tuple[np.ndarray, np.ndarray]:
        test_rows = data.mask("emodb", frozenset({speaker}))
        train = rav_train | (data.mask("emodb") & ~test_rows)
        values, classes = scores(
            fit(recipe, *data.training_rows(train, recipe.augment)), data.x["none"][test_rows]
        )
        return data.y[test_rows], restricted_predictions(values, classes, corpora.EMODB_CLASSES)

    speakers = sorted({c.speaker_number for c in data.clips if c.corpus == "emodb"})
    loso = Parallel(n_jobs=N_JOBS)(delayed(loso_fold)(s) for s in speakers)
    loso_truth = [truth for truth, _ in loso]
    loso_pred = [pred for _, pred in loso]
    held_out["emodb_loso"] = war_uar(
        np.concatenate(loso_truth), np.concatenate(loso_pred), corpora.EMODB_CLASSES
    )
    for name, figures in held_out.items():
        print(f"  {name}: WAR {figures['war']:.3f}  UAR {figures['uar']:.3f}  (n={figures['n']})")
    print("  RAVDESS 21-24 confusion (rows true, cols predicted):", corpora.RAVDESS_CLASSES)
    for cls, counts in zip(
        corpora.RAVDESS_CLASSES,
        held_out["ravdess_actors_21_24"]["confusion"]["rows_true_cols_pred"],
        strict=True,
    ):
        print(f"    {cls:>9} {counts}")

    report: dict[str, Any] = {
        "selected": asdict(recipe),
        "temperature": temperature,
        "cv": cv_table,
        "held_out": held_out,
    }
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    if args.eval_only:
        print(f"done in {time.time() - started:.0f} s (eval only, no weights written)")
        return 0

    shipped = fit(recipe, *data.training_rows(np.ones(len(data.clips), dtype=bool), recipe.augment))
    metadata = {
        "feature_spec": features.FEATURE_SPEC,
        "n_features": features.N_FEATURES,
        "sample_rate": features.SAMPLE_RATE,
        "recipe": {
            **asdict(recipe),
            "training_data": "RAVDESS speech actors 01-24 (1440 clips) + EmoDB speakers 03-16 (535 clips)",
            "selection": "speaker-grouped 5-fold CV on RAVDESS 01-20 + EmoDB 03-14",
        },
        "metrics": {
            name: {k: v for k, v in figs.items() if k != "confusion"} for name, figs in held_out.items()
        },
        "metrics_note": "held-out figures come from the same recipe trained without the held-out speakers",
    }
    shipped = classifier.SoftmaxClassifier(
        **{**shipped.__dict__, "temperature": temperature, "metadata": metadata}
    )
    weights_path, metadata_path = classifier.save(shipped, args.out)
    print(
        f"wrote {weights_path} ({weights_path.stat().st_size / 1024:.0f} KiB), {metadata_path}; "
        f"version {shipped.version}; {time.time() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
