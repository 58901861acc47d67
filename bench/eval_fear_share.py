"""What each prior preset does to per-label recall and to an "angry" rule on neutral speech, and how
often `fear` is said on speech whose truth is not fear: as the top label (what was reported before
the rare-label rule) and as an asserted label (after it: fusion.RARE_LABELS need
RARE_LABEL_MIN_CONFIDENCE, else the segment is flagged uncertain).

Speech (never EMOVO, URDU or TurEV-DB: those are reserved for independent evaluation, and the rule's
threshold and the presets must not be chosen on them):

- `--calls` (the default): the two shipped example calls through `callpulse analyze`'s code path with
  default settings (our ASR gives the words), every speaker analyzed. Truth: the demo call's six read
  sentences and the escalation call's agent turns are neutral; its customer turns are what the script
  means (neutral, furious → angry, thankful → happy; the complaint counts as "not fear" only). The
  escalation call is rebuilt with espeak-ng and sox for its turn times (tests/escalation_call.py).
- `--folder DIR`: held-out clips laid out DIR/<label>/*.wav (canonical labels), one segment each,
  voice only (no words), e.g. the test speakers of a corpus never trained on.

A preset is applied as fusion applies it, to the fused balanced scores (priors.shift), so one
analysis serves every preset.

    python bench/eval_fear_share.py [--calls] [--folder DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESERVED = ("emovo", "urdu", "turev")
MOOD_TRUTH = {"neutral": "neutral", "furious": "angry", "thankful": "happy", "complaining": "not_fear"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", action="store_true", help="the shipped example calls (the default)")
    parser.add_argument("--folder", type=Path, help="DIR/<label>/*.wav of held-out speech")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.folder is not None and any(name in str(args.folder).lower() for name in RESERVED):
        parser.error("EMOVO, URDU and TurEV-DB are reserved for independent evaluation")

    samples: list[tuple[str, dict[str, float]]] = []
    if args.calls or args.folder is None:
        samples += _calls()
    if args.folder is not None:
        samples += _folder(args.folder)
    figures = {"segments": len(samples), "sources": ("calls " if args.calls or args.folder is None else "")
               + (str(args.folder) if args.folder else ""), **evaluate(samples)}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def evaluate(samples: list[tuple[str, dict[str, float]]]) -> dict[str, Any]:
    from callpulse.settings import Settings
    from worker.pipeline import priors
    from worker.pipeline.fusion import RARE_LABEL_MIN_CONFIDENCE, RARE_LABELS

    below = Settings().uncertain_below
    out: dict[str, Any] = {"rare_labels": sorted(RARE_LABELS),
                           "rare_label_min_confidence": RARE_LABEL_MIN_CONFIDENCE, "presets": {}}
    for preset in priors.PRESETS:
        rows = []
        for truth, scores in samples:
            shifted = priors.shift(scores, preset)
            label = max(shifted, key=shifted.__getitem__)
            confidence = shifted[label]
            uncertain = confidence < below or (
                label in RARE_LABELS and confidence < RARE_LABEL_MIN_CONFIDENCE)
            rows.append((truth, label, uncertain))
        recall = {}
        for label in sorted({t for t, _, _ in rows if t != "not_fear"}):
            of = [(p, u) for t, p, u in rows if t == label]
            recall[label] = {"n": len(of), "top_label": round(sum(p == label for p, _ in of) / len(of), 3),
                             "asserted": round(sum(p == label and not u for p, u in of) / len(of), 3)}
        neutral = [(p, u) for t, p, u in rows if t == "neutral"]
        not_fear = [(p, u) for t, p, u in rows if t != "fear"]
        out["presets"][preset] = {
            "recall": recall,
            # An "angry" rule on the label, and one that also requires a sure label.
            "angry_rule_on_neutral": round(sum(p == "angry" for p, _ in neutral) / max(1, len(neutral)), 3),
            "angry_rule_on_neutral_asserted": round(
                sum(p == "angry" and not u for p, u in neutral) / max(1, len(neutral)), 3),
            "fear_share_top_label": round(sum(p == "fear" for p, _ in not_fear) / max(1, len(not_fear)), 3),
            "fear_share_asserted": round(
                sum(p == "fear" and not u for p, u in not_fear) / max(1, len(not_fear)), 3),
            "labels": {lab: sum(p == lab for _, p, _ in rows) for lab in sorted({p for _, p, _ in rows})},
        }
    return out


def _calls() -> list[tuple[str, dict[str, float]]]:
    from tests import escalation_call
    from tests.support import EXAMPLE

    work = Path(tempfile.mkdtemp(prefix="callpulse-eval-fear-"))
    os.environ["CALLPULSE_DATA_DIR"] = str(work / "data")
    os.environ["CALLPULSE_DATABASE_URL"] = ""
    os.environ.pop("CALLPULSE_ASR_ENABLED", None)
    from callpulse.local import analyze_files
    from callpulse.settings import Settings

    escalation = work / "escalation.wav"
    turns = escalation_call.build(escalation)
    roles = {0: "agent", 1: "customer"}
    results = list(analyze_files([EXAMPLE, escalation], roles, ["agent", "customer"], Settings(),
                                 show_progress=False))
    samples = []
    for result in results:
        assert result["status"] == "done", result.get("error")
        for seg in result["segments"]:
            if not seg.get("scores"):
                continue
            truth = "neutral"
            if result is results[1] and seg["channel"] == 1:
                turn = max((t for t in turns if t.turn.channel == 1),
                           key=lambda t: min(seg["end_s"], t.end_s) - max(seg["start_s"], t.start_s))
                truth = MOOD_TRUTH[turn.turn.mood]
            samples.append((truth, dict(seg["scores"])))
    return samples


def _folder(folder: Path) -> list[tuple[str, dict[str, float]]]:
    import numpy as np

    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.fusion import MultimodalModel
    from worker.pipeline.labels import CANONICAL_LABELS
    from worker.pipeline.media import decode
    from worker.pipeline.voice.registry import load_backend

    model = MultimodalModel(load_backend("embedded", None, "cpu", "auto"))
    samples = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name in CANONICAL_LABELS):
        for path in sorted(label_dir.glob("*.wav")):
            audio = np.asarray(decode.decode(path, 16_000).samples[0], dtype=np.float32)
            seg = SegmentInput(key=path.name, audio=audio, sample_rate=16_000, start_s=0.0,
                               end_s=len(audio) / 16_000, role="customer")
            samples.append((label_dir.name, dict(model.predict([seg])[0].scores)))
    return samples


if __name__ == "__main__":
    sys.exit(main())
