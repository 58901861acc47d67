"""Calls assembled from held-out speakers' clips: does a caller angry for the whole call stay angry?

    python -m training.call_protocols --ravdess DIR --emodb DIR --cache-dir DIR
        [--report FILE.json]

Per-speaker normalisation judges each segment against the speaker's other speech in the call. A
corpus clip scored against random clips of its speaker is not what a call looks like, so this
builds calls: for every held-out speaker (RAVDESS actors 21-24, EmoDB 15 and 16; the model is
trained with the shipped recipe on the other speakers),

* one-emotion calls: all of the speaker's clips of one emotion (a caller in one mood throughout);
* mixed calls: 8 clips from the speaker's neutral/calm/bored ones plus 2 + 2 clips of two other
  emotions (mostly calm speech with some emotional turns), 5 draws per speaker;

and every segment's reference is the rest of its call (leave-one-out, as in production). Scores
are per-call accuracy over the corpus's own classes, averaged over calls, for four rules: the
speaker head alone (ser-v2's rule), the plain head alone (`CALLPULSE_SPEAKER_NORMALISATION=false`),
the previous mix (mix-by-plain-neutral-v1: the plain head's neutral probability of the baseline) and
the shipped mix (`classifier.EmbeddedWeights.speaker_weight`: v1 gated by how far out of domain the
baseline is). The gate's statistic is also printed for the training speakers' own calls (the
distribution its thresholds come from). Reserved corpora are never read.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training import corpora, evaluation, voice
from training.protocols import ALLOWED, EMODB_TEST_SPEAKERS, RAVDESS_TEST_ACTORS
from worker.pipeline.voice.embedded import classifier

# A rule is a fixed speaker weight, a function of (model, reference means), or None (the shipped rule).
Rule = float | Callable[[classifier.EmbeddedWeights, np.ndarray], np.ndarray] | None
RULES: dict[str, Rule] = {
    "speaker head only": 1.0,
    "plain head only": 0.0,
    "mix v1 (plain-neutral)": lambda model, means: model.plain_neutral(means),
    "mix (shipped)": None,
}
MIXED_DRAWS = 5


def build_calls(data: voice.Data, rows: np.ndarray, seed: int = 0) -> list[dict[str, Any]]:
    """Calls (row index arrays) of the held-out speakers: one-emotion and mixed."""
    rng = np.random.default_rng(seed)
    calls = []
    for speaker in np.unique(data.speakers[rows]):
        mine = np.flatnonzero(rows & (data.speakers == speaker))
        emotions = sorted(set(data.y[mine].tolist()))
        for emotion in emotions:
            clips = mine[data.y[mine] == emotion]
            if clips.size >= 3:
                calls.append({"kind": "one-emotion", "emotion": emotion, "speaker": speaker, "rows": clips})
        calm = mine[np.isin(data.y[mine], voice.NEUTRAL_POOL)]
        others = [e for e in emotions if e not in voice.NEUTRAL_POOL]
        for _ in range(MIXED_DRAWS):
            picked = [rng.choice(calm, size=min(8, calm.size), replace=False)]
            for emotion in rng.choice(others, size=2, replace=False):
                pool = mine[data.y[mine] == emotion]
                picked.append(rng.choice(pool, size=min(2, pool.size), replace=False))
            calls.append({"kind": "mixed", "emotion": "", "speaker": speaker, "rows": np.concatenate(picked)})
    return calls


def references(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each segment's reference (mean, std, n): the rest of its call."""
    summary = classifier.summarise(x)
    means, stds, ns = [], [], []
    for row in x:
        rest = classifier.leave_out({**summary, "includes_segment": True}, row)
        if rest is None:
            means.append(np.zeros(x.shape[1]))
            stds.append(np.zeros(x.shape[1]))
            ns.append(0.0)
        else:
            means.append(np.asarray(rest["mean"]))
            stds.append(np.asarray(rest["std"]))
            ns.append(float(rest["n"]))
    return np.array(means), np.array(stds), np.array(ns)


def score_call(model: classifier.EmbeddedWeights, x: np.ndarray, allowed: tuple[str, ...],
               rule: Rule) -> np.ndarray:
    """Per-segment predictions of one call, each segment's reference being the rest of the call."""
    means, stds, ns = references(x)
    weight = rule(model, means) if callable(rule) else rule
    p = model.combined(x, means, stds, ns, fixed_weight=weight)
    return evaluation.restricted_predictions(p, model.classes, allowed)


def outside_share(model: classifier.EmbeddedWeights, data: voice.Data, calls: list[dict[str, Any]],
                  cond: str) -> dict[str, float]:
    """Percentiles over segments of the gate's statistic: the share of features on which the
    reference mean lies beyond classifier.OUTLIER_Z of the plain head's training clips."""
    plain = model.heads["plain"]
    shares = []
    for call in calls:
        means = references(data.x[cond][call["rows"]])[0]
        shares.append(np.mean(np.abs((means - plain.mean) / plain.scale) > classifier.OUTLIER_Z, axis=1))
    values = np.concatenate(shares)
    return {f"p{p}": float(np.percentile(values, p)) for p in (50, 95, 99, 100)}


def evaluate(model: classifier.EmbeddedWeights, data: voice.Data, calls: list[dict[str, Any]],
             cond: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule_name, rule in RULES.items():
        per_kind: dict[str, list[float]] = {}
        angry_calls: list[float] = []
        for call in calls:
            rows = call["rows"]
            corpus = data.corpus[rows[0]]
            predicted = score_call(model, data.x[cond][rows], ALLOWED[corpus], rule)
            accuracy = float(np.mean(predicted == data.y[rows]))
            per_kind.setdefault(f"{call['kind']} {corpus}", []).append(accuracy)
            per_kind.setdefault(call["kind"], []).append(accuracy)
            if call["kind"] == "one-emotion" and call["emotion"] == "angry":
                angry_calls.append(accuracy)
        per_kind["one-emotion angry"] = angry_calls
        out[rule_name] = {kind: {"mean_accuracy": float(np.mean(v)), "calls": len(v)}
                     for kind, v in per_kind.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ravdess", type=Path, required=True)
    parser.add_argument("--emodb", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--conditions", default="none,telephone",
                        help="conditions the model trains on; calls are scored in each of them")
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
    test = data.mask("ravdess", RAVDESS_TEST_ACTORS) | data.mask("emodb", EMODB_TEST_SPEAKERS)
    model, _ = voice.fit_model(recipes, data, ~test)
    calls = build_calls(data, test)
    report: dict[str, Any] = {"calls": len(calls), "by_condition": {}, "outside_share_training_calls": {}}
    for cond in conditions:
        share = outside_share(model, data, build_calls(data, ~test), cond)
        report["outside_share_training_calls"][cond] = share
        print(f"{cond:10s} gate statistic on training speakers' calls: "
              + " ".join(f"{k} {v:.3f}" for k, v in share.items()), flush=True)
        report["by_condition"][cond] = figures = evaluate(model, data, calls, cond)
        for rule, kinds in figures.items():
            cells = [f"{kind}: {v['mean_accuracy']:.3f} ({v['calls']})" for kind, v in sorted(kinds.items())]
            print(f"{cond:10s} {rule:18s} " + "  ".join(cells), flush=True)
    report["seconds"] = time.time() - started
    print(f"done in {report['seconds']:.0f} s")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
