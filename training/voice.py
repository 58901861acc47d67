"""Train and evaluate the embedded speech-emotion model (the exact data recipe lives here).

    python -m training.voice --ravdess DIR --emodb DIR [--out worker/weights/]
        [--cache-dir DIR] [--eval-only | --ship-only] [--corrections FILE.jsonl] [--report FILE]

Recipe (details and figures in docs/MODELS.md, "Embedded model"):
1. Features (`features.py`) of every clip in four listening conditions: studio, telephone band
   (300-3400 Hz, 8 kHz), white noise 15-30 dB SNR, and a phone codec (band + mu-law + line noise).
   Augmented copies only ever feed *training*; evaluation reads the matching condition of the test clips.
2. Per-speaker normalisation: each clip's features minus the mean of up to 12 other clips of the
   same speaker (same condition, labels unused), divided by their shrunk spread -> `speaker` head.
   A `plain` head reads the raw features for segments without a speaker reference.
3. Model selection by speaker-grouped 5-fold CV inside RAVDESS actors 01-20 + EmoDB 03-14 only;
   temperatures from the same out-of-fold logits (`protocols.py`).
4. Held-out report, EmoDB leave-one-speaker-out, leave-one-corpus-out (`protocols.py`).
5. The shipped model: the selected recipe on every clip of both corpora plus any supervisor
   corrections (`--corrections`, `corrections.py`).

EMOVO, URDU and TurEV-DB are reserved for independent evaluation (`independent.py`): this module
never imports their lists, and `load_data` refuses their corpus names.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from training import corpora, evaluation
from worker.pipeline.voice.embedded import classifier, features

TRAIN_CONDITIONS: tuple[str, ...] = ("none", "telephone", "noise", "codec")
# Low-arousal classes: what most of a caller's other speech sounds like in a real call.
NEUTRAL_POOL: tuple[str, ...] = ("neutral", "calm", "boredom")
SEED = 0
N_JOBS = 2  # folds in parallel; the build machine has two cores


@dataclass(frozen=True)
class Recipe:
    """One head's candidate: classifier family and knobs, and which augmented copies it trains on."""

    family: str = "logreg"  # logreg | mlp
    c: float = 0.01  # inverse regularisation (logreg)
    hidden: int = 128  # mlp
    alpha: float = 1.0  # mlp L2
    augment: tuple[str, ...] = ("telephone", "noise", "codec")
    # Speaker head: also train on references drawn from the speaker's neutral/calm/bored clips only.
    neutral_refs: bool = False

    @staticmethod
    def from_json(fields: dict[str, Any]) -> Recipe:
        fields = {k: v for k, v in fields.items() if k in Recipe.__dataclass_fields__}
        if "augment" in fields:
            fields["augment"] = tuple(fields["augment"])
        recipe = Recipe(**fields)
        if recipe.family not in ("logreg", "mlp") or set(recipe.augment) - set(TRAIN_CONDITIONS):
            raise SystemExit(f"unusable recipe {fields}")
        return recipe


@dataclass
class Data:
    """Clips, their features per condition and per-row speaker references per condition."""

    clips: list[corpora.Clip]
    x: dict[str, np.ndarray]  # condition -> (n_clips, N_FEATURES)
    refs: dict[str, evaluation.References] = field(init=False)
    refs_neutral: dict[str, evaluation.References] = field(init=False)
    y: np.ndarray = field(init=False)
    speakers: np.ndarray = field(init=False)
    corpus: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.y = np.array([c.label for c in self.clips])
        self.speakers = np.array([c.speaker for c in self.clips])
        self.corpus = np.array([c.corpus for c in self.clips])
        # The same seed per condition: each clip's reference uses the same other clips in every condition.
        self.refs = {cond: evaluation.build_references(x, self.speakers, SEED) for cond, x in self.x.items()}
        # Labels pick the pool only; at evaluation this simulates a call's mostly-neutral reference.
        pool = np.isin(self.y, NEUTRAL_POOL)
        self.refs_neutral = {
            cond: evaluation.build_references(x, self.speakers, SEED + 1, pool=pool)
            for cond, x in self.x.items()
        }

    def mask(self, corpus: str, numbers: frozenset[int] | None = None) -> np.ndarray:
        return np.array(
            [c.corpus == corpus and (numbers is None or c.speaker_number in numbers) for c in self.clips]
        )


def _estimator(recipe: Recipe) -> Any:
    if recipe.family == "logreg":
        return LogisticRegression(C=recipe.c, max_iter=3000, class_weight="balanced")
    return MLPClassifier(
        (recipe.hidden,), alpha=recipe.alpha, max_iter=100, batch_size=128, learning_rate_init=1e-3,
        random_state=SEED,
    )


def fit_head(recipe: Recipe, x: np.ndarray, y: np.ndarray) -> classifier.SoftmaxClassifier:
    """Fit one head and return it as the numpy forward pass we ship (so we evaluate exactly that)."""
    scaler = StandardScaler().fit(x)
    model = _estimator(recipe)
    # Corpora differ in size and class mix: weight rows so each corpus and each class count alike
    # (MLPClassifier takes no sample weights, so its rows are resampled to the same effect).
    weights = _balance_weights(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if recipe.family == "logreg":
            model.fit(scaler.transform(x), y)
        else:
            rng = np.random.default_rng(SEED)
            pick = rng.choice(len(y), size=len(y), p=weights / weights.sum())
            model.fit(scaler.transform(x[pick]), y[pick])
    if recipe.family == "logreg":
        weights_, biases = (model.coef_.T,), (model.intercept_,)
    else:
        weights_, biases = tuple(model.coefs_), tuple(model.intercepts_)
    return classifier.SoftmaxClassifier(
        classes=tuple(str(c) for c in model.classes_),
        mean=scaler.mean_.astype(np.float32),
        scale=np.where(scaler.scale_ > 0, scaler.scale_, 1.0).astype(np.float32),
        weights=tuple(w.astype(np.float32) for w in weights_),
        biases=tuple(b.astype(np.float32) for b in biases),
    )


def _balance_weights(y: np.ndarray) -> np.ndarray:
    classes, counts = np.unique(y, return_counts=True)
    per_class = dict(zip(classes.tolist(), (len(y) / (len(classes) * counts)).tolist(), strict=True))
    return np.array([per_class[v] for v in y.tolist()])


@dataclass
class Extra:
    """Rows added to training outside the corpora (supervisor corrections): raw and normalised."""

    x: np.ndarray
    y: np.ndarray
    normalised: np.ndarray  # rows with a usable speaker reference only
    y_normalised: np.ndarray


def training_matrices(
    recipes: dict[str, Recipe], data: Data, rows: np.ndarray, extra: Extra | None = None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Training matrices of both heads over the recipe's conditions, plus the global mean/spread."""
    global_mean = data.x["none"][rows].mean(axis=0)
    global_std = data.x["none"][rows].std(axis=0)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for head, recipe in recipes.items():
        xs, ys = [], []
        for cond in ("none", *recipe.augment):
            if head == "speaker":
                kinds = [data.refs[cond]] + ([data.refs_neutral[cond]] if recipe.neutral_refs else [])
                for kind in kinds:
                    usable = rows & (kind.n > 0)
                    xs.append(evaluation.normalise(data.x[cond][usable], kind.rows(usable), global_std))
                    ys.append(data.y[usable])
            else:
                xs.append(data.x[cond][rows])
                ys.append(data.y[rows])
            if extra is not None:  # real call audio: already narrowband, added once per condition
                xs.append(extra.normalised if head == "speaker" else extra.x)
                ys.append(extra.y_normalised if head == "speaker" else extra.y)
        out[head] = (np.vstack(xs), np.concatenate(ys))
    return out, global_mean, global_std


def fit_model(
    recipes: dict[str, Recipe], data: Data, rows: np.ndarray, extra: Extra | None = None
) -> tuple[classifier.EmbeddedWeights, np.ndarray]:
    """Both heads on `rows`; returns the weights and the training rows' global feature mean."""
    matrices, global_mean, global_std = training_matrices(recipes, data, rows, extra)
    heads = {head: fit_head(recipes[head], *matrices[head]) for head in classifier.HEADS}
    classes = heads["speaker"].classes
    if heads["plain"].classes != classes:
        raise ValueError("both heads must see the same classes")
    return classifier.EmbeddedWeights(heads=heads, global_std=global_std), global_mean


def head_logits(
    model: classifier.EmbeddedWeights, global_mean: np.ndarray, data: Data, rows: np.ndarray, cond: str
) -> dict[str, np.ndarray]:
    """Logits of the inference paths: speaker reference (random clips of the speaker, or only their
    neutral/calm/bored clips as in a call), plain head, and the global-statistics fallback."""
    x = data.x[cond][rows]
    plain = model.heads["plain"].logits(x)
    out = {"plain": plain}
    kinds = (("speaker", data.refs[cond]), ("speaker_neutral", data.refs_neutral[cond]))
    for path, all_refs in kinds:
        refs = all_refs.rows(rows)
        logits = model.heads["speaker"].logits(evaluation.normalise(x, refs, model.global_std))
        # Rows without a reference (one-clip speakers) fall back to the plain head, as in production.
        logits[refs.n == 0] = plain[refs.n == 0]
        out[path] = logits
    fallback = evaluation.global_fallback(x, global_mean, model.global_std)
    out["global"] = model.heads["speaker"].logits(fallback)
    return out


def load_data(ravdess: Path, emodb: Path, cache_dir: Path, log: Any = print) -> Data:
    clips = corpora.list_ravdess(ravdess) + corpora.list_emodb(emodb)
    corpora.check_trainable(clips)
    if not clips:
        raise SystemExit(f"no clips found under {ravdess} / {emodb}")
    x = {cond: corpora.cached_features(clips, cond, cache_dir, log=log) for cond in TRAIN_CONDITIONS}
    return Data(clips, x)


def ship(
    recipes: dict[str, Recipe],
    temperatures: dict[str, float],
    data: Data,
    extra: Extra | None,
    out_dir: Path,
    metrics: dict[str, Any],
    note: str,
) -> classifier.EmbeddedWeights:
    """The selected recipe on every clip (plus corrections), with the CV temperatures."""
    model, _ = fit_model(recipes, data, np.ones(len(data.clips), dtype=bool), extra)
    heads = {name: head.with_temperature(temperatures[name]) for name, head in model.heads.items()}
    n_extra = 0 if extra is None else int(extra.y.size)
    metadata = {
        "feature_spec": features.FEATURE_SPEC,
        "n_features": features.N_FEATURES,
        "sample_rate": features.SAMPLE_RATE,
        "recipe": {name: asdict(recipe) for name, recipe in recipes.items()},
        "normalisation": {
            "reference_clips": evaluation.REFERENCE_CLIPS,
            "reference_prior": classifier.REFERENCE_PRIOR,
            "no_reference_path": "plain head",
        },
        "training_data": {
            "ravdess": int(data.mask("ravdess").sum()),
            "emodb": int(data.mask("emodb").sum()),
            "corrections": n_extra,
            "conditions": list(TRAIN_CONDITIONS),
        },
        "metrics": metrics,
        "metrics_note": note,
    }
    shipped = classifier.EmbeddedWeights(heads=heads, global_std=model.global_std, metadata=metadata)
    weights_path, metadata_path = classifier.save(shipped, out_dir)
    print(
        f"wrote {weights_path} ({weights_path.stat().st_size / 1024:.0f} KiB), {metadata_path}; "
        f"version {shipped.version}"
    )
    return shipped


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "worker" / "weights"

def _previous_recipe(out_dir: Path) -> tuple[dict[str, Recipe], dict[str, float], dict[str, Any]] | None:
    path = out_dir / classifier.METADATA_FILE
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if not isinstance(meta.get("temperatures"), dict):
        return None
    recipes = {name: Recipe.from_json(meta["recipe"][name]) for name in classifier.HEADS}
    return recipes, {k: float(v) for k, v in meta["temperatures"].items()}, meta.get("metrics", {})


def main(argv: list[str] | None = None) -> int:
    from training import corrections, protocols

    parser = argparse.ArgumentParser(prog="callpulse train", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ravdess", type=Path, required=True, help="audio_speech_actors_01-24 directory")
    parser.add_argument("--emodb", type=Path, required=True, help="EmoDB wav/ directory")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "callpulse" / "ser-features"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--eval-only", action="store_true", help="select and evaluate, write no weights")
    mode.add_argument(
        "--ship-only", action="store_true",
        help="skip selection and evaluation: retrain the recipe recorded in --out's current weights",
    )
    parser.add_argument("--corrections", type=Path, help="JSON Lines of supervisor-labelled call spans")
    parser.add_argument("--report", type=Path, help="also write the full report (JSON) here")
    parser.add_argument("--quick", action="store_true", help="evaluate the default recipe only (no grid)")
    parser.add_argument(
        "--candidates", type=json.loads,
        help='replace the selection grid, e.g. \'[{"family": "mlp", "alpha": 3.0, "neutral_refs": true}]\'',
    )
    args = parser.parse_args(argv)
    started = time.time()
    data = load_data(args.ravdess, args.emodb, args.cache_dir)
    extra = corrections.load(args.corrections, data.x["none"].std(axis=0)) if args.corrections else None
    # A new --out (a tenant's model directory) retrains the recipe of the weights shipped with the
    # package rather than silently running the whole selection.
    previous = (_previous_recipe(args.out) or _previous_recipe(SHIPPED_DIR)) if args.ship_only else None
    if args.ship_only and previous is not None:
        recipes, temperatures, metrics = previous
        note = "metrics of the recorded recipe (not re-measured by --ship-only)"
    else:
        grid = [Recipe.from_json(c) for c in args.candidates] if args.candidates else None
        result = protocols.run_all(data, quick=args.quick, grid=grid)
        recipes, temperatures, metrics = result["recipes"], result["temperatures"], result["metrics"]
        note = "held-out figures come from the same recipe trained without the held-out speakers"
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(json.dumps(result["report"], indent=2, default=str) + "\n")
    if args.eval_only:
        print(f"done in {time.time() - started:.0f} s (eval only, no weights written)")
        return 0
    ship(recipes, temperatures, data, extra, args.out, metrics, note)
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
