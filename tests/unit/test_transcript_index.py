"""The time index over a transcript's words finds exactly what the plain scan finds."""

from __future__ import annotations

import random

from worker.pipeline.contracts import Word
from worker.pipeline.text.transcript import Utterance, words_in
from worker.pipeline.text.transcript_index import TranscriptIndex


def _utterances(rng: random.Random, n: int) -> list[Utterance]:
    out, t = [], 0.0
    for i in range(n):
        start = t + rng.uniform(0, 2)
        end = start + rng.uniform(0.3, 6)
        text = " ".join(f"w{i}_{k}" for k in range(rng.randint(1, 12)))
        timed = tuple(Word(start + k * 0.2, start + k * 0.2 + 0.15, f"t{i}_{k}")
                      for k in range(int((end - start) / 0.2))) if rng.random() < 0.5 else ()
        out.append(Utterance(start, end, text, None, rng.choice([0, 1, None]), timed))
        t = start + rng.uniform(0, 4)  # utterances of different channels overlap in time
    return out


def test_index_matches_the_scan() -> None:
    rng = random.Random(7)
    utterances = _utterances(rng, 400)
    index = TranscriptIndex(utterances)
    end = max(u.end_s for u in utterances)
    for _ in range(300):
        a = rng.uniform(-5, end)
        b = a + rng.uniform(0, 12)
        channel = rng.choice([0, 1, None])
        assert index.words(a, b, channel) == sorted(words_in(utterances, a, b, channel=channel),
                                                    key=lambda w: ((w.start_s + w.end_s) / 2, w.start_s))
    assert not TranscriptIndex([]) and index
