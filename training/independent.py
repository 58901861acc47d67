"""Corpora reserved for independent evaluation (EMOVO, URDU, TurEV-DB): file lists and labels.

Nothing here may feed training, tuning or model selection: `training.py` never imports this module
and `corpora.check_trainable` refuses these corpus names. Labels are mapped onto the model's own
classes; each corpus is scored over its own label set only.

    python -m training.independent --cache-dir DIR [--urdu DIR] [--turev DIR] [--emovo DIR]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from training import corpora, evaluation
from training.corpora import Clip
from worker.pipeline.voice.embedded import classifier

# URDU (Latif et al. 2018): folders Angry/Happy/Neutral/Sad, files SGX_FXX_EYY (G gender, X speaker).
URDU_FOLDERS = {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad"}
URDU_NAME = re.compile(r"^S([MF])(\d+)_F\d+_[AHNS]\d+\.wav$")
# TurEV-DB (Canpolat et al. 2020): folders Angry/Calm/Happy/Sad, files <speaker>_<initials>_<word>.wav.
TUREV_FOLDERS = {"Angry": "angry", "Calm": "calm", "Happy": "happy", "Sad": "sad"}
TUREV_NAME = re.compile(r"^(\d+)_([a-z]+)_.+\.wav$")
# EMOVO (Costantini et al. 2014): <emo>-<speaker>-<sentence>.wav, emo in dis gio neu pau rab sor tri.
EMOVO_EMOTIONS = {
    "dis": "disgust",
    "gio": "happy",
    "neu": "neutral",
    "pau": "fearful",
    "rab": "angry",
    "sor": "surprised",
    "tri": "sad",
}
EMOVO_NAME = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([mf]\d)-.+\.wav$")


def list_urdu(root: Path) -> list[Clip]:
    clips = []
    for folder, label in URDU_FOLDERS.items():
        for path in sorted((root / folder).glob("*.wav")):
            match = URDU_NAME.match(path.name)
            if match:
                clips.append(Clip(path, "urdu", f"urdu-{match.group(1)}{int(match.group(2)):02d}", label))
    return clips


def list_turev(root: Path) -> list[Clip]:
    clips = []
    for folder, label in TUREV_FOLDERS.items():
        for path in sorted((root / folder).glob("*.wav")):
            match = TUREV_NAME.match(path.name)
            if match:
                clips.append(Clip(path, "turev", f"turev-{match.group(1)}", label))
    return clips


def list_emovo(root: Path) -> list[Clip]:
    clips = []
    for path in sorted(root.rglob("*.wav")):
        match = EMOVO_NAME.match(path.name)
        if match:
            clips.append(Clip(path, "emovo", f"emovo-{match.group(2)}", EMOVO_EMOTIONS[match.group(1)]))
    return clips


LISTERS = {"urdu": list_urdu, "turev": list_turev, "emovo": list_emovo}


def evaluate(model: classifier.EmbeddedWeights, clips: list[Clip], cache_dir: Path) -> dict[str, Any]:
    """Shipped weights on one reserved corpus: UAR over its own labels, canonical 7-way accuracy
    (what the product would show), ECE; clean and telephone band; with and without references."""
    allowed = tuple(sorted({c.label for c in clips}))
    truth = np.array([c.label for c in clips])
    speakers = np.array([c.speaker for c in clips])
    out: dict[str, Any] = {}
    for cond in ("none", "telephone"):
        x = corpora.cached_features(clips, cond, cache_dir, log=lambda _: None)
        refs = evaluation.build_references(x, speakers, seed=0)
        plain = model.heads["plain"].logits(x)
        speaker = model.heads["speaker"].logits(evaluation.normalise(x, refs, model.global_std))
        speaker[refs.n == 0] = plain[refs.n == 0]
        for path, logits in (("speaker", speaker), ("plain", plain)):
            t = model.heads[path].temperature
            figures = evaluation.report(logits, model.classes, truth, allowed, t, with_confusion=True)
            figures["canonical_7way_accuracy"] = figures.pop("canonical_accuracy")
            out[f"{cond}/{path}"] = figures
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Independent evaluation of the shipped embedded model")
    shipped = Path(__file__).resolve().parents[1] / "worker" / "weights"
    parser.add_argument("--weights", type=Path, default=shipped)
    parser.add_argument("--cache-dir", type=Path, required=True)
    for name in LISTERS:
        parser.add_argument(f"--{name}", type=Path, help=f"{name} root directory")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    path = args.weights / classifier.WEIGHTS_FILE if args.weights.is_dir() else args.weights
    model = classifier.load(path)
    report: dict[str, Any] = {"version": model.version}
    for name, lister in LISTERS.items():
        root = getattr(args, name)
        if root is None:
            continue
        clips = lister(root)
        report[name] = evaluate(model, clips, args.cache_dir)
        for key, f in report[name].items():
            print(
                f"{name} {key} (n={f['n']}, {len(set(c.speaker for c in clips))} speakers): "
                f"UAR {f['uar']:.3f} WAR {f['war']:.3f} canonical-7 acc {f['canonical_7way_accuracy']:.3f} "
                f"ECE {f['ece_t1']:.3f}->{f['ece_calibrated']:.3f}",
                flush=True,
            )
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
