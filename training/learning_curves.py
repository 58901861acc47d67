"""Learning curves of `callpulse adapt` on a corpus the base model never saw (leave-one-corpus-out).

    python -m training.learning_curves --ravdess DIR --emodb DIR --cache-dir DIR
        [--sizes 25,50,100,200,400] [--repeats 3] [--report FILE.json]

For each new corpus (EmoDB, then RAVDESS): a base model is trained with the shipped recipe on the
other corpus only; the new corpus's speakers are split in half; n labels drawn from the first half
adapt it (`adaptation.fit_residual`, the code `callpulse adapt` runs) and both models are scored on
the second half, whose references come from their own unlabelled clips as in production. Scored
on the six emotions both corpora share (UAR, argmax over those six), mean over `--repeats` draws.
Reserved corpora (EMOVO, URDU, TurEV-DB) are never read here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from training import adaptation, corpora, evaluation, voice
from training.protocols import SHARED
from worker.pipeline.voice.embedded import classifier

SPLITS = {
    # adaptation speakers / test speakers: half of each corpus's speakers, both sexes in each half
    "emodb": (frozenset({3, 8, 9, 10, 11}), frozenset({12, 13, 14, 15, 16})),
    "ravdess": (frozenset(range(1, 13)), frozenset(range(13, 25))),
}


def base_without(data: voice.Data, corpus: str,
                 recipes: dict[str, voice.Recipe]) -> classifier.EmbeddedWeights:
    rows = data.corpus != corpus
    model, _ = voice.fit_model(recipes, data, rows)
    return model


def uar(model: classifier.EmbeddedWeights, p: np.ndarray, truth: np.ndarray) -> float:
    allowed = [c for c in SHARED if c in model.classes]
    predicted = evaluation.restricted_predictions(p, model.classes, allowed)
    return evaluation.war_uar(truth, predicted, allowed)["uar"]


def curve(data: voice.Data, corpus: str, model: classifier.EmbeddedWeights, sizes: list[int],
          repeats: int, l2_values: list[float], cond: str) -> dict[str, Any]:
    """UAR before/after per n. Two reference settings: `speaker` (labels and test clips carry their
    speaker, references from the speaker's other clips, as stored corrections do) and `none` (one
    clip per file and no speaker column, so every clip is scored by the plain head plus residual)."""
    adapt_speakers, test_speakers = SPLITS[corpus]
    shared = np.isin(data.y, SHARED)
    pool = np.flatnonzero(data.mask(corpus, adapt_speakers) & shared)
    test = data.mask(corpus, test_speakers) & shared
    x = data.x[cond]
    # Test references: up to 12 other clips of the test speaker (any emotion, labels unused).
    refs = data.refs[cond].rows(test)
    zeros = np.zeros_like(refs.mean)
    settings = {"speaker": (refs.mean, refs.std, refs.n), "none": (zeros, zeros, np.zeros(len(refs.n)))}
    truth = data.y[test]
    out: dict[str, Any] = {"n_test": int(test.sum()), "n_pool": int(pool.size), "base_uar": {}, "sizes": {}}
    for name, (mean, std, n) in settings.items():
        out["base_uar"][name] = uar(model, model.combined(x[test], mean, std, n, use_residual=False), truth)
    for size in sizes:
        scores: dict[str, list[float]] = {f"{name}/l2={l2:g}": [] for name in settings for l2 in l2_values}
        for repeat in range(repeats):
            rng = np.random.default_rng(1000 * size + repeat)
            pick = rng.choice(pool, size=min(size, pool.size), replace=False)
            for name, (mean, std, n) in settings.items():
                groups = data.speakers[pick] if name == "speaker" else np.array([str(i) for i in pick])
                train_p = adaptation.base_probabilities(model, x[pick], groups)
                for l2 in l2_values:
                    residual, _ = adaptation.fit_residual(model, x[pick], data.y[pick], train_p, l2)
                    p = model.with_residual(residual, {}).combined(x[test], mean, std, n)
                    scores[f"{name}/l2={l2:g}"].append(uar(model, p, truth))
        out["sizes"][size] = {key: float(np.mean(v)) for key, v in scores.items()}
        print(f"  {corpus} {cond} n={size}: base {out['base_uar']} → "
              + ", ".join(f"{key}: {np.mean(v):.3f}" for key, v in scores.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ravdess", type=Path, required=True)
    parser.add_argument("--emodb", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--sizes", default="25,50,100,200,400")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--l2", default=str(adaptation.L2), help="comma list (development)")
    parser.add_argument("--conditions", default="none,telephone",
                        help="listening conditions of the features: the base trains on all of them, "
                        "adaptation and scoring read the first (docs/MODELS.md)")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    conditions = args.conditions.split(",")
    clips = corpora.list_ravdess(args.ravdess) + corpora.list_emodb(args.emodb)
    corpora.check_trainable(clips)
    data = voice.Data(clips, {c: corpora.cached_features(clips, c, args.cache_dir) for c in conditions})
    shipped = json.loads((voice.SHIPPED_DIR / classifier.METADATA_FILE).read_text())
    augment = tuple(c for c in conditions if c != "none")
    recipes = {h: voice.Recipe.from_json({**shipped["recipe"][h], "augment": augment})
               for h in classifier.HEADS}
    sizes = [int(s) for s in args.sizes.split(",")]
    l2_values = [float(v) for v in args.l2.split(",")]
    report: dict[str, Any] = {"recipes": {h: vars(r) for h, r in recipes.items()}, "curves": {}}
    for corpus in ("emodb", "ravdess"):
        model = base_without(data, corpus, recipes)
        report["curves"][corpus] = curve(data, corpus, model, sizes, args.repeats, l2_values, conditions[0])
    report["seconds"] = time.time() - started
    print(f"done in {report['seconds']:.0f} s")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
