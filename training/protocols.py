"""Evaluation protocols of the embedded model: selection CV, held-out speakers, EmoDB
leave-one-speaker-out and leave-one-corpus-out, each on studio and telephone-band audio.

Every figure is computed for four inference paths: `speaker` (speaker head with a reference from
up to 12 other clips of the same speaker), `speaker_neutral` (the reference drawn only from the
speaker's neutral/calm/bored clips, as in a call where most speech is neutral), `plain` (no
reference, plain head) and `global` (no reference, speaker head fed with global statistics).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import GroupKFold

from training import corpora, evaluation
from training.voice import N_JOBS, Data, Recipe, fit_model, head_logits
from worker.pipeline.voice.embedded import classifier

RAVDESS_TEST_ACTORS = frozenset({21, 22, 23, 24})
EMODB_TEST_SPEAKERS = frozenset({15, 16})
EVAL_CONDITIONS: tuple[str, ...] = ("none", "telephone")
PATHS: tuple[str, ...] = ("speaker", "speaker_neutral", "plain", "global")
# Emotions both corpora have (for leave-one-corpus-out).
SHARED: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
ALLOWED = {"ravdess": corpora.RAVDESS_CLASSES, "emodb": corpora.EMODB_CLASSES}


def candidates(quick: bool) -> list[Recipe]:
    """Small grid (2 shared CPU cores): regularisation, family, and with/without augmentation."""
    if quick:
        return [Recipe(neutral_refs=True)]
    return [
        Recipe(c=0.01),
        Recipe(c=0.003, neutral_refs=True),
        Recipe(c=0.01, neutral_refs=True),
        Recipe(c=0.03, neutral_refs=True),
        Recipe(c=0.01, neutral_refs=True, augment=()),
        Recipe(family="mlp", alpha=1.0, neutral_refs=True),
        Recipe(family="mlp", alpha=3.0, neutral_refs=True),
    ]


def _fold(
    recipe: Recipe, data: Data, train: np.ndarray, test: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    model, global_mean = fit_model({"speaker": recipe, "plain": recipe}, data, train)
    return {cond: head_logits(model, global_mean, data, test, cond) for cond in EVAL_CONDITIONS}


def cross_validate(recipe: Recipe, data: Data, rows: np.ndarray, folds: int = 5) -> dict[str, Any]:
    """Speaker-grouped CV inside `rows`; out-of-fold UAR per head, corpus and condition."""
    index = np.flatnonzero(rows)
    splits = list(GroupKFold(n_splits=folds).split(index, groups=data.speakers[index]))

    def masks(idx: np.ndarray) -> np.ndarray:
        m = np.zeros(len(data.clips), dtype=bool)
        m[index[idx]] = True
        return m

    outputs = Parallel(n_jobs=N_JOBS)(delayed(_fold)(recipe, data, masks(t), masks(v)) for t, v in splits)
    classes = _classes(data)
    result: dict[str, Any] = {"oof": {}}
    for path in ("speaker", "speaker_neutral", "plain"):
        uars = []
        for cond in EVAL_CONDITIONS:
            oof = np.zeros((len(data.clips), len(classes)))
            for (_, val), out in zip(splits, outputs, strict=True):
                oof[index[val]] = out[cond][path]
            result["oof"][(path, cond)] = oof[index]
            for corpus in ("ravdess", "emodb"):
                ids = index[data.corpus[index] == corpus]
                predicted = evaluation.restricted_predictions(oof[ids], classes, ALLOWED[corpus])
                uar = evaluation.war_uar(data.y[ids], predicted, ALLOWED[corpus])["uar"]
                result[f"{path}/{corpus}/{cond}"] = uar
                uars.append(uar)
        result[f"{path}/score"] = float(np.mean(uars))
    # The speaker head is selected on both reference kinds: real references lie in between.
    result["speaker/score"] = (result["speaker/score"] + result.pop("speaker_neutral/score")) / 2
    return result


def _classes(data: Data) -> tuple[str, ...]:
    return tuple(sorted(set(data.y.tolist())))


def _figures(
    logits: dict[str, np.ndarray], classes: tuple[str, ...], truth: np.ndarray, allowed: tuple[str, ...],
    temperatures: dict[str, float], confusion: bool = False,
) -> dict[str, Any]:
    return {
        path: evaluation.report(
            logits[path], classes, truth, allowed, temperatures["plain" if path == "plain" else "speaker"],
            with_confusion=confusion and path == "speaker",
        )
        for path in PATHS
    }


def held_out(
    recipes: dict[str, Recipe], temperatures: dict[str, float], data: Data, train: np.ndarray
) -> dict[str, Any]:
    model, global_mean = fit_model(recipes, data, train)
    classes = model.classes
    out: dict[str, Any] = {}
    for name, corpus, numbers in (
        ("ravdess_actors_21_24", "ravdess", RAVDESS_TEST_ACTORS),
        ("emodb_speakers_15_16", "emodb", EMODB_TEST_SPEAKERS),
    ):
        rows = data.mask(corpus, numbers)
        for cond in EVAL_CONDITIONS:
            logits = head_logits(model, global_mean, data, rows, cond)
            out[f"{name}/{cond}"] = _figures(
                logits, classes, data.y[rows], ALLOWED[corpus], temperatures, confusion=cond == "none"
            )
    return out


def _loso_fold(recipes: dict[str, Recipe], data: Data, speaker: int) -> dict[str, Any]:
    test = data.mask("emodb", frozenset({speaker}))
    model, global_mean = fit_model(recipes, data, ~test)
    return {cond: head_logits(model, global_mean, data, test, cond) for cond in EVAL_CONDITIONS} | {
        "rows": np.flatnonzero(test), "classes": model.classes,
    }


def emodb_loso(recipes: dict[str, Recipe], temperatures: dict[str, float], data: Data) -> dict[str, Any]:
    speakers = sorted({c.speaker_number for c in data.clips if c.corpus == "emodb"})
    folds = Parallel(n_jobs=N_JOBS)(delayed(_loso_fold)(recipes, data, s) for s in speakers)
    rows = np.concatenate([f["rows"] for f in folds])
    classes = folds[0]["classes"]
    out = {}
    for cond in EVAL_CONDITIONS:
        logits = {path: np.vstack([f[cond][path] for f in folds]) for path in PATHS}
        truth = data.y[rows]
        out[f"emodb_loso/{cond}"] = _figures(logits, classes, truth, corpora.EMODB_CLASSES, temperatures)
    return out


def _loco_fold(recipes: dict[str, Recipe], data: Data, source: str, target: str) -> dict[str, Any]:
    model, global_mean = fit_model(recipes, data, data.mask(source))
    rows = data.mask(target) & np.isin(data.y, SHARED)
    return {cond: head_logits(model, global_mean, data, rows, cond) for cond in EVAL_CONDITIONS} | {
        "rows": rows, "classes": model.classes, "name": f"train_{source}_test_{target}",
    }


def leave_one_corpus_out(
    recipes: dict[str, Recipe], temperatures: dict[str, float], data: Data
) -> dict[str, Any]:
    folds = Parallel(n_jobs=N_JOBS)(
        delayed(_loco_fold)(recipes, data, s, t) for s, t in (("ravdess", "emodb"), ("emodb", "ravdess"))
    )
    out = {}
    for fold in folds:
        for cond in EVAL_CONDITIONS:
            out[f"{fold['name']}/{cond}"] = _figures(
                fold[cond], fold["classes"], data.y[fold["rows"]], SHARED, temperatures, confusion=True
            )
    return out


def _print(name: str, figures: dict[str, Any]) -> None:
    parts = [
        f"{path} UAR {f['uar']:.3f} WAR {f['war']:.3f} ECE {f['ece_t1']:.3f}->{f['ece_calibrated']:.3f}"
        for path, f in figures.items()
    ]
    print(f"  {name} (n={figures['speaker']['n']}): " + " | ".join(parts), flush=True)


def run_all(data: Data, quick: bool = False, grid: list[Recipe] | None = None) -> dict[str, Any]:
    train = ~data.mask("ravdess", RAVDESS_TEST_ACTORS) & ~data.mask("emodb", EMODB_TEST_SPEAKERS)
    n_speakers = len(set(data.speakers[train]))
    print(f"model selection: {n_speakers} training speakers, grouped 5-fold CV", flush=True)
    table: list[dict[str, Any]] = []
    best: dict[str, tuple[float, Recipe, dict[Any, np.ndarray]]] = {}
    for recipe in grid or candidates(quick):
        cv = cross_validate(recipe, data, train)
        row = {**asdict(recipe), **{k: v for k, v in cv.items() if k != "oof"}}
        table.append(row)
        print(f"  {recipe}: " + " ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)
                                        and "/" in k), flush=True)
        for path in ("speaker", "plain"):
            if path not in best or cv[f"{path}/score"] > best[path][0]:
                best[path] = (cv[f"{path}/score"], recipe, cv["oof"])
    classes = _classes(data)
    recipes = {path: best[path][1] for path in classifier.HEADS}
    # Temperatures from the selected recipes' out-of-fold logits (training speakers only).
    temperatures = {}
    for head, paths in (("speaker", ("speaker", "speaker_neutral")), ("plain", ("plain",))):
        oof = best[head][2]
        logits = np.vstack([oof[(path, cond)] for path in paths for cond in EVAL_CONDITIONS])
        truth = np.concatenate([data.y[train]] * len(EVAL_CONDITIONS) * len(paths))
        temperatures[head] = evaluation.fit_temperature(logits, classes, truth)
    print(f"selected {recipes}; temperatures {temperatures}", flush=True)
    results: dict[str, Any] = {}
    results.update(held_out(recipes, temperatures, data, train))
    results.update(emodb_loso(recipes, temperatures, data))
    results.update(leave_one_corpus_out(recipes, temperatures, data))
    for name, figures in results.items():
        _print(name, figures)
    metrics = {
        name: {path: {k: v for k, v in f.items() if k != "confusion"} for path, f in figures.items()}
        for name, figures in results.items()
    }
    report = {
        "selected": {k: asdict(v) for k, v in recipes.items()},
        "temperatures": temperatures,
        "cv": table,
        "results": results,
    }
    return {"recipes": recipes, "temperatures": temperatures, "metrics": metrics, "report": report}
