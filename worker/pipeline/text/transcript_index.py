"""A transcript's words indexed by time: the words of many segments found in O(log n) each.

`transcript.words_in` scans every utterance; a call of 6,000 segments against a transcript of
100,000 utterances would take minutes on every timeline read and rules evaluation. The index sorts
each word once by its midpoint (the rule that assigns a word to a segment) and bisects."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

from worker.pipeline.contracts import Word
from worker.pipeline.text.transcript import Utterance, from_rows, spread_words


class TranscriptIndex:
    def __init__(self, utterances: Iterable[Utterance]) -> None:
        items: list[tuple[float, int | None, Word]] = []
        for u in utterances:
            for w in u.words or spread_words(u):
                items.append(((w.start_s + w.end_s) / 2, u.channel, w))
        items.sort(key=lambda item: (item[0], item[2].start_s))
        self._mids = [mid for mid, _, _ in items]
        self._items = items

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> TranscriptIndex:
        """From the stored form (`transcript.utterances`)."""
        return cls(from_rows(rows))

    def __bool__(self) -> bool:
        return bool(self._items)

    def words(self, start_s: float, end_s: float, channel: int | None = None) -> list[Word]:
        """Words whose midpoint lies in [start_s, end_s], said on `channel` (words of utterances
        without a channel belong to any channel), in time order."""
        lo, hi = bisect_left(self._mids, start_s), bisect_right(self._mids, end_s)
        return [w for _, ch, w in self._items[lo:hi] if channel is None or ch is None or ch == channel]
