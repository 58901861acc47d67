"""Words a contact centre knows the meaning of: a small English lexicon of call phrases ("cancel my
contract", "speak to your manager", "thank you so much") that sharpens the text model's answer and
names the words that did it, with their times.

Why beside the text model: its head was trained on TV dialogue (MELD), where "I want to cancel my
contract, speak to your manager right now!" reads as sad, and escalation words such as "outrageous"
are rare. A supervisor expects such a turn to count as angry and wants to see which words said so.
The lexicon is a transparent prior, not a classifier: each matched phrase adds its weight to one
label's log-odds of the text model's scores, so the text model still decides when no phrase matches,
and the voice still votes in fusion. Negated phrases ("not happy", "never helpful") count against
their label (positive ones toward anger). English only, like the text model.

LEXICON_VERSION goes into the text model's version: changing a weight makes new prediction rows."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from worker.pipeline.contracts import Word

LEXICON_VERSION = "lex1"
MIN_WORD_PROBABILITY = 0.2  # ASR words it was unsure of are not quoted as evidence
NEGATORS = frozenset({"not", "never", "no", "isn't", "wasn't", "don't", "didn't", "aren't", "hardly"})

# label -> ((phrase, weight), ...): weights are log-odds added to the label; phrases are matched on
# lower-cased words without punctuation, "*" matches any word ending ("lie*": lie, lies, liar...).
PHRASES: dict[str, tuple[tuple[str, float], ...]] = {
    "angry": (
        ("ridiculous", 1.6), ("outrageous", 1.8), ("furious", 2.0), ("unacceptable", 1.6),
        ("angry", 1.8), ("annoyed", 1.2), ("fed up", 1.6), ("sick of", 1.6), ("sick and tired", 1.8),
        ("cancel my contract", 1.4), ("cancel my account", 1.4), ("cancel my subscription", 1.2),
        ("speak to your manager", 1.6), ("speak to a manager", 1.6), ("talk to your manager", 1.6),
        ("right now", 0.6), ("your lies", 1.6), ("liar*", 1.6), ("rip off", 1.4), ("ripped off", 1.4),
        ("scam", 1.2), ("useless", 1.4), ("incompetent", 1.6), ("disgrace*", 1.6), ("pathetic", 1.4),
        ("how dare", 1.6), ("nobody fixes", 1.2), ("nobody helps", 1.2), ("waste of my time", 1.4),
        ("terrible service", 1.4), ("worst service", 1.6), ("absolutely ridiculous", 0.6),
        ("not good enough", 1.0), ("i have called", 0.5), ("three times", 0.6), ("again and again", 0.8),
        ("shut up", 1.8), ("damn", 1.0), ("hell", 0.6), ("enough is enough", 1.6),
    ),
    "happy": (
        ("thank you so much", 1.8), ("thanks so much", 1.8), ("thank you very much", 1.4),
        ("really appreciate", 1.4), ("appreciate*", 0.8), ("wonderful", 1.4), ("lovely", 1.0),
        ("great", 0.8), ("perfect", 1.0), ("brilliant", 1.2), ("excellent", 1.2), ("fantastic", 1.4),
        ("amazing", 1.2), ("awesome", 1.2), ("delighted", 1.6), ("glad", 0.8), ("happy", 1.2),
        ("so helpful", 1.4), ("very helpful", 1.2), ("you have been", 0.3), ("love it", 1.2),
    ),
    "sad": (
        ("disappointed", 1.2), ("disappointing", 1.0), ("upset", 1.0), ("sad", 1.4), ("heartbroken", 1.8),
        ("passed away", 1.8), ("lost my job", 1.6), ("can't afford", 1.2), ("depressed", 1.6),
        ("unfortunately", 0.4), ("devastated", 1.8), ("crying", 1.4),
    ),
    "fear": (
        ("worried", 1.2), ("scared", 1.6), ("afraid", 1.2), ("anxious", 1.4), ("panic*", 1.4),
        ("terrified", 1.8), ("frightened", 1.6), ("nervous", 1.0),
    ),
    "disgust": (
        ("disgusting", 1.8), ("disgusted", 1.8), ("revolting", 1.6), ("gross", 1.0),
    ),
    "surprise": (
        ("no way", 0.8), ("unbelievable", 0.6), ("i can't believe", 0.8), ("what a surprise", 1.2),
    ),
}
POSITIVE = frozenset({"happy"})


@dataclass(frozen=True)
class LexiconCue:
    start_s: float
    end_s: float
    text: str  # the words as said
    label: str
    weight: float  # log-odds added (negative when negated)


def _token(text: str) -> str:
    return re.sub(r"[^a-z0-9']+", "", text.lower().replace("’", "'"))


def _compile() -> list[tuple[list[str], str, float]]:
    out = [(phrase.split(), label, weight) for label, items in PHRASES.items() for phrase, weight in items]
    return sorted(out, key=lambda item: -len(item[0]))  # longest first: "thank you so much" over "thank"


_PATTERNS = _compile()


def _matches(pattern: list[str], tokens: list[str], at: int) -> bool:
    if at + len(pattern) > len(tokens):
        return False
    for p, t in zip(pattern, tokens[at: at + len(pattern)], strict=True):
        if not (t.startswith(p[:-1]) if p.endswith("*") else t == p):
            return False
    return True


def find(words: Sequence[Word]) -> list[LexiconCue]:
    """Every phrase said in ``words`` (each word used once; longer phrases first)."""
    usable = [w for w in words if w.probability is None or w.probability >= MIN_WORD_PROBABILITY]
    tokens = [_token(w.text) for w in usable]
    taken = [False] * len(tokens)
    cues: list[LexiconCue] = []
    for pattern, label, weight in _PATTERNS:
        for at in range(len(tokens)):
            if any(taken[at: at + len(pattern)]) or not _matches(pattern, tokens, at):
                continue
            for k in range(at, at + len(pattern)):
                taken[k] = True
            negated = any(t in NEGATORS for t in tokens[max(0, at - 2): at])
            said = " ".join(w.text.strip() for w in usable[at: at + len(pattern)])
            start, end = usable[at].start_s, usable[at + len(pattern) - 1].end_s
            if negated and label in POSITIVE:  # "not happy", "not helpful": a complaint
                cues.append(LexiconCue(start, end, said, "angry", round(weight * 0.6, 3)))
            elif not negated:
                cues.append(LexiconCue(start, end, said, label, weight))
    return sorted(cues, key=lambda c: c.start_s)


def apply(observation: Any, cues: Sequence[LexiconCue]) -> Any:
    """The text model's observation (text_emotion.TextObservation) with its scores shifted by the
    cues; its label and confidence follow the new scores."""
    if not cues:
        return observation
    scores = shift(dict(observation.scores), cues)
    label = max(scores, key=scores.__getitem__)
    return replace(observation, scores=scores, label=label, confidence=scores[label])


def shift(scores: dict[str, float], cues: Sequence[LexiconCue]) -> dict[str, float]:
    """The text model's scores with each cue's weight added to its label's log-odds."""
    boost: dict[str, float] = {}
    for cue in cues:
        boost[cue.label] = boost.get(cue.label, 0.0) + cue.weight
    if not boost:
        return dict(scores)
    raw = {k: max(v, 1e-6) * math.exp(min(boost.get(k, 0.0), 6.0)) for k, v in scores.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}
