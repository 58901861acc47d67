"""`callpulse adapt` and the adaptation path of `callpulse train --tenant`.

Both build a new embedded voice model from the shipped one (or `--base`) plus a contact center's own
labels, with no public corpus on disk: a CSV of labelled files/spans, or the supervisor corrections
a tenant stored through `PUT /v1/segments/{id}/label`. The heavy lifting is in
`training.adaptation`; this module parses options, reports, and writes the model
directory that `callpulse analyze --model-path DIR` and `CALLPULSE_MODEL_PATH` load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ADAPT_DESCRIPTION = """Adapt the embedded voice model to your own labelled audio (no public corpus needed).
LABELS.csv has a header with file,label and optionally start_s,end_s (a whole file or a span of it;
speaker and channel columns are optional too); file paths are relative to the CSV; labels are the
canonical ones (neutral, happy, sad, angry, fear, disgust, surprise), the model's own (calm, boredom)
or synonyms (anger, joy, frustrated, ...). Unknown labels and spans past the end of a file are
refused; a label with fewer than 5 examples keeps the base model's prior (with a warning). Prints a
held-out estimate (folds grouped by speaker, or by file) next to the base model's on the same folds,
and writes DIR with its own model version: use it with `callpulse analyze --model-path DIR` or
CALLPULSE_MODEL_PATH=DIR, then POST /v1/recordings/{id}/rescore re-runs calls with it."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("adapt", help="adapt the embedded voice model to your own labelled audio "
                       "(LABELS.csv); no public corpus needed", description=ADAPT_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=Path, required=True, metavar="LABELS.csv")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the new model directory")
    p.add_argument("--base", type=Path, metavar="DIR",
                   help="the model to start from: an embedded model directory (default: the one shipped "
                   "in the package), or an emotion2vec / emotion2vec+ release directory (config.yaml, "
                   "model.pt), whose head is adapted on its utterance embedding with the encoder frozen")
    p.set_defaults(func=cmd_adapt)


def _shipped_dir() -> Path:
    from worker.pipeline.voice.embedded.model import default_weights_path

    return default_weights_path().parent.resolve()


def _refuse_shipped(out: Path, command: str) -> bool:
    if out.resolve() == _shipped_dir():
        print(f"callpulse {command}: --out must not be the package's own weights folder; write the "
              "adapted model to its own directory", file=sys.stderr)
        return True
    return False


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(spans: list[Any], base: Path | None, out: Path, source: str, *, strict: bool) -> int:
    """Features → residual head → model directory; the estimate goes to stdout."""
    from training import adapt_data, adaptation
    from worker.pipeline.voice.embedded import classifier
    from worker.pipeline.voice.embedded import model as embedded

    started = time.time()
    model = embedded.load_model(weights_path=base).model
    x, used = adapt_data.extract(spans, strict=strict, log=_log)
    if not used:
        raise adapt_data.LabelsError("no usable labelled audio")
    import numpy as np

    data = adaptation.LabeledFeatures(
        x=x, y=np.array([spans[i].label for i in used]), groups=np.array([spans[i].group for i in used]))
    adapted, report = adaptation.adapt(model, data, source, log=_log)
    classifier.save(adapted, out)
    print(adaptation.describe(report))
    print(f"wrote {out} (model version {adapted.version}, from {model.version}) "
          f"in {time.time() - started:.0f} s")
    print(f"use it: callpulse analyze --model-path {out} FILE, or CALLPULSE_MODEL_PATH={out} for the workers")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from training import adapt_data
    from worker.pipeline.voice.embedded import model as embedded

    if _refuse_shipped(args.out, "adapt"):
        return 2
    from training import adapt_emotion2vec

    if adapt_emotion2vec.is_release(args.base):
        return _adapt_emotion2vec(args)
    try:
        classes = embedded.load_model(weights_path=args.base).classes
        spans = adapt_data.read_csv(args.labels, classes)
        return run(spans, args.base, args.out, f"csv:{args.labels.name}", strict=True)
    except (adapt_data.LabelsError, FileNotFoundError, ValueError) as exc:
        print(f"callpulse adapt: {exc}", file=sys.stderr)
        return 2


def _train_tenant_emotion2vec(tenant: str, out: Path, base: Path) -> int:
    """`callpulse train --tenant NAME --base EMOTION2VEC_DIR`: the tenant's corrections adapt its head."""
    from training import adapt_data, adapt_emotion2vec
    from worker.pipeline.voice.funasr import emotion2vec

    try:
        classes = emotion2vec.read_classes(base) or list(adapt_emotion2vec.RELEASE_CLASSES)
        spans = tenant_spans(tenant, tuple(c for c in classes if not c.startswith("unuse")))
        if not spans:
            raise adapt_data.LabelsError(f"tenant {tenant} has no usable corrections yet "
                                         "(PUT /v1/segments/{id}/label)")
        report = adapt_emotion2vec.run(spans, base, out, f"tenant:{tenant}", strict=False, log=_log)
    except (adapt_data.LabelsError, FileNotFoundError, ValueError) as exc:
        print(f"callpulse train: {exc}", file=sys.stderr)
        return 2
    print(adapt_emotion2vec.describe(report))
    print(f"wrote {out} (model version {report['version']}, from {report['base_version']}; encoder frozen)")
    return 0


def _adapt_emotion2vec(args: argparse.Namespace) -> int:
    """--base is an emotion2vec release: its head is adapted on the utterance embedding."""
    from training import adapt_data, adapt_emotion2vec
    from worker.pipeline.voice.funasr import emotion2vec

    started = time.time()
    try:
        classes = emotion2vec.read_classes(args.base) or list(adapt_emotion2vec.RELEASE_CLASSES)
        spans = adapt_data.read_csv(args.labels, [c for c in classes if not c.startswith("unuse")])
        report = adapt_emotion2vec.run(spans, args.base, args.out, f"csv:{args.labels.name}", strict=True,
                                       log=_log)
    except (adapt_data.LabelsError, FileNotFoundError, ValueError) as exc:
        print(f"callpulse adapt: {exc}", file=sys.stderr)
        return 2
    print(adapt_emotion2vec.describe(report))
    print(f"wrote {args.out} (model version {report['version']}, from {report['base_version']}; encoder "
          f"frozen) in {time.time() - started:.0f} s")
    print(f"use it: callpulse analyze --backend emotion2vec --model-path {args.out} FILE, or "
          f"CALLPULSE_MODEL_BACKEND=emotion2vec CALLPULSE_MODEL_PATH={args.out} for the workers")
    return 0


def tenant_spans(tenant: str, classes: tuple[str, ...]) -> list[Any]:
    """The tenant's stored corrections as labelled spans (labels with no class in the model, e.g.
    contempt, are skipped and counted: a supervisor may use the extended label set)."""
    from callpulse.cli import load_corrections
    from training import adapt_data

    spans, skipped = [], 0
    for ex in load_corrections(tenant):
        cls = adapt_data.model_class(ex.label, classes)
        if cls is None:
            skipped += 1
            continue
        spans.append(adapt_data.LabeledSpan(Path(ex.media), cls, ex.start_s, ex.end_s, ex.channel,
                                            ex.speaker, f"correction {ex.speaker}@{ex.start_s:.1f}s"))
    _log(f"callpulse train: {len(spans)} corrections of tenant {tenant}"
         + (f" ({skipped} with a label this model has no class for, skipped)" if skipped else ""))
    return spans


def cmd_train_tenant(tenant: str, out: Path, base: Path | None) -> int:
    from training import adapt_data, adapt_emotion2vec
    from worker.pipeline.voice.embedded import model as embedded

    if _refuse_shipped(out, "train"):
        return 2
    if adapt_emotion2vec.is_release(base):
        assert base is not None
        return _train_tenant_emotion2vec(tenant, out, base)
    try:
        spans = tenant_spans(tenant, embedded.load_model(weights_path=base).classes)
        if not spans:
            raise adapt_data.LabelsError(f"tenant {tenant} has no usable corrections yet "
                                         "(PUT /v1/segments/{id}/label)")
        return run(spans, base, out, f"tenant:{tenant}", strict=False)
    except (adapt_data.LabelsError, FileNotFoundError, ValueError) as exc:
        print(f"callpulse train: {exc}", file=sys.stderr)
        return 2
