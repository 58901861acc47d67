"""How often the voice model says `fear` on speech that is not fearful, and how often it says it
confidently: before (uncertain only under CALLPULSE_UNCERTAIN_BELOW) and after the rare-label rule
(fusion.RARE_LABELS need RARE_LABEL_MIN_CONFIDENCE, else the segment is flagged uncertain).

Speech: URDU (Latif et al. 2018; angry/happy/neutral/sad, no fear: every fear answer is wrong), a
corpus reserved for independent evaluation, read from a local copy; optionally any folder of wav
files whose truth is not fear (e.g. the scripted escalation call's turns). Each clip is one segment;
with --reference each speaker's clips (up to 12) make the speaker reference, as ingest does.

    python bench/eval_fear_share.py --urdu /work/data/urdu [--reference] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urdu", type=Path, required=True)
    parser.add_argument("--reference", action="store_true", help="per-speaker normalisation, as in calls")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from training import independent
    from worker.pipeline import priors
    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.fusion import RARE_LABEL_MIN_CONFIDENCE, RARE_LABELS, MultimodalModel
    from worker.pipeline.media import decode
    from worker.pipeline.voice.registry import load_backend

    items = [(c.path, c.label, c.speaker) for c in independent.list_urdu(args.urdu)]
    model = MultimodalModel(load_backend("embedded", None, "cpu", "auto"))
    clips = {}
    for path, _, _ in items:
        clips[path] = decode.decode(path, 16_000).samples[0]
    references: dict[str, object] = {}
    if args.reference:
        by_speaker: dict[str, list[np.ndarray]] = {}
        for path, _, speaker in items:
            by_speaker.setdefault(speaker, []).append(clips[path])
        references = {sp: model.speaker_reference(cl[:12], 16_000) for sp, cl in by_speaker.items()}
    rows = []
    by_preset: dict[str, list[tuple[str, str]]] = {}
    for path, truth, speaker in items:
        audio = np.asarray(clips[path], dtype=np.float32)
        seg = SegmentInput(key=path.name, audio=audio, sample_rate=16_000, start_s=0.0,
                           end_s=len(audio) / 16_000, role="customer",
                           speaker_reference=references.get(speaker))  # type: ignore[arg-type]
        result = model.predict([seg])[0]
        rows.append((truth, result.label, result.confidence, result.uncertain))
        for preset in priors.PRESETS:
            scores = priors.shift(result.scores, preset)
            by_preset.setdefault(preset, []).append((truth, max(scores, key=scores.__getitem__)))
    not_fear = [r for r in rows if r[0] != "fear"]
    n = len(not_fear)
    fear = [r for r in not_fear if r[1] == "fear"]
    before = [r for r in fear if r[2] >= 0.5]
    after = [r for r in fear if not r[3]]
    figures = {
        "corpus": "URDU", "clips": n, "reference": args.reference,
        "labels": dict(Counter(r[1] for r in rows)),
        "fear_share": round(len(fear) / n, 3),
        "confident_fear_share_before": round(len(before) / n, 3),
        "confident_fear_share_after": round(len(after) / n, 3),
        "rare_labels": sorted(RARE_LABELS), "rare_label_min_confidence": RARE_LABEL_MIN_CONFIDENCE,
        "accuracy": round(sum(r[0] == r[1] for r in rows) / len(rows), 3),
        "presets": {preset: _preset_figures(pairs) for preset, pairs in by_preset.items()},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _preset_figures(pairs: list[tuple[str, str]]) -> dict[str, object]:
    """Per-label recall, and how often an "angry" rule would fire on speech whose truth is neutral."""
    recall = {}
    for label in sorted({t for t, _ in pairs}):
        of = [p for t, p in pairs if t == label]
        recall[label] = round(sum(p == label for p in of) / len(of), 3)
    neutral = [p for t, p in pairs if t == "neutral"]
    on_neutral = sum(p == "angry" for p in neutral) / max(1, len(neutral))
    return {"recall": recall, "angry_on_neutral": round(on_neutral, 3),
            "fear_share": round(sum(p == "fear" for t, p in pairs if t != "fear") / len(pairs), 3)}


if __name__ == "__main__":
    sys.exit(main())
