"""Parse R1-Omni-style generations: `<think>…</think><answer>…</answer>`.

Real generations are messy: tags missing or doubled, text cut off by max_new_tokens, prose around
the answer ("The emotion is: Angry."), synonyms ("frustrated"), MAFW extras ("anxious") and, from
checkpoints trained on Chinese data, Chinese answers ("愤怒"). The parser takes what it can and
says how sure it is of the structure; it never invents a label.

When nothing maps (`label is None`), the backend reports label "neutral" with confidence 0,
uniform scores and raw_label "unknown", keeping the raw generation in reasoning_text: the output
contract needs a canonical label, and confidence 0 is what dashboards and rules already read as
"no opinion" — "unknown" is not added to the canonical set so no rule or aggregate has to learn a
label that means "no label".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.pipeline import labels

UNKNOWN = "unknown"

# Free-text words generative models use beyond the corpus vocabularies in labels.SYNONYMS.
EXTRA_SYNONYMS: dict[str, str] = {
    "annoyed": "angry", "annoyance": "angry", "irritated": "angry", "irritation": "angry",
    "furious": "angry", "mad": "angry", "rage": "angry", "hostile": "angry", "agitated": "angry",
    "pleased": "happy", "cheerful": "happy", "glad": "happy", "delighted": "happy", "content": "happy",
    "satisfied": "happy", "joyful": "happy", "amused": "happy", "relieved": "happy",
    "unhappy": "sad", "sorrow": "sad", "sorrowful": "sad", "depressed": "sad", "upset": "sad",
    "melancholy": "sad", "grief": "sad", "dejected": "sad",
    "terrified": "fear", "frightened": "fear", "panic": "fear", "panicked": "fear",
    "worried": "anxiety", "nervous": "anxiety", "worry": "anxiety",
    "astonished": "surprise", "amazed": "surprise", "shocked": "surprise", "startled": "surprise",
    "disgusting": "disgust", "revolted": "disgust", "repulsed": "disgust",
    "contemptuous": "contempt", "scornful": "contempt", "helpless": "helplessness",
    "indifferent": "neutral", "composed": "neutral", "relaxed": "neutral", "none": "neutral",
}

# Chinese answers (R1-Omni/HumanOmni were trained partly on Chinese instructions). Longer keys win
# at the same position, so "不高兴" (unhappy) is not read as "高兴" (happy).
CHINESE_LABELS: dict[str, str] = {
    "愤怒": "angry", "生气": "angry", "恼火": "angry", "气愤": "angry", "愤慨": "angry",
    "高兴": "happy", "快乐": "happy", "开心": "happy", "愉快": "happy", "喜悦": "happy", "满意": "happy",
    "不高兴": "sad", "不开心": "sad", "悲伤": "sad", "伤心": "sad", "难过": "sad", "悲哀": "sad",
    "中性": "neutral", "平静": "neutral", "中立": "neutral", "冷静": "neutral",
    "惊讶": "surprise", "惊奇": "surprise", "吃惊": "surprise",
    "恐惧": "fear", "害怕": "fear", "惊恐": "fear",
    "厌恶": "disgust", "反感": "disgust", "恶心": "disgust",
    "蔑视": "contempt", "轻蔑": "contempt", "焦虑": "anxiety", "无助": "helplessness",
    "失望": "disappointment",
}

_NEGATIONS = frozenset({"not", "no", "never", "isn't", "isnt", "wasn't", "neither", "nor", "without"})
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>")
_THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<\s*/?\s*(?:think|answer)\s*>", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_HAN = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class ParsedAnswer:
    label: str | None  # canonical (or MAFW extra) label; None when the answer names none we know
    answer: str  # the answer text as the model wrote it (tags removed), "" when there was none
    think: str  # the reasoning text, "" when there was none
    well_formed: bool  # a closed <think> and a closed <answer>, as the prompt asked

    @property
    def raw_label(self) -> str:
        """What to store as the backend's raw answer: its own words, or "unknown"."""
        if self.label is None:
            return UNKNOWN
        return self.answer.strip()[:64] or self.label


def _clean(text: str) -> str:
    return _SPECIAL_TOKEN.sub("", text).strip()


def _map_word(word: str) -> str | None:
    return labels.canonical(word) or EXTRA_SYNONYMS.get(word)


def _latin_label(text: str) -> tuple[int, str] | None:
    """First emotion word that is not negated ("not happy, rather sad" → sad), with its offset."""
    words = list(_WORD.finditer(text.lower()))
    for i, match in enumerate(words):
        label = _map_word(match.group())
        if label is None:
            continue
        previous = words[i - 1].group() if i > 0 else ""
        if previous in _NEGATIONS:
            continue
        return match.start(), label
    return None


def _chinese_label(text: str) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None  # (offset, -length, label): earliest, then longest
    for key, label in CHINESE_LABELS.items():
        offset = text.find(key)
        if offset >= 0 and (best is None or (offset, -len(key)) < best[:2]):
            best = (offset, -len(key), label)
    return (best[0], best[2]) if best else None


def label_from_text(text: str) -> str | None:
    """Map a free-text answer onto a label: exact vocabulary first, then the first emotion word."""
    stripped = _ANY_TAG.sub(" ", _clean(text)).strip().strip(" \t\n.,;:!?\"'`*()[]{}“”‘’。，！？：；、")
    if not stripped:
        return None
    exact = _map_word(stripped.lower()) or CHINESE_LABELS.get(stripped)
    if exact:
        return exact
    found = [hit for hit in (_latin_label(stripped), _chinese_label(stripped) if _HAN.search(stripped)
                             else None) if hit is not None]
    return min(found)[1] if found else None


def _between(text: str, open_tag: re.Pattern[str], close_tag: re.Pattern[str]) -> tuple[str, bool] | None:
    """Text after the *last* opening tag up to its closing tag (or the end, if cut off)."""
    opens = list(open_tag.finditer(text))
    if not opens:
        return None
    rest = text[opens[-1].end():]
    close = close_tag.search(rest)
    if close is None:
        return rest, False
    return rest[: close.start()], True


def parse_generation(text: str) -> ParsedAnswer:
    """Think text and label from one generation; tolerant of every defect listed above."""
    cleaned = _clean(text)
    think_part = _between(cleaned, _THINK_OPEN, _THINK_CLOSE)
    closed_think = think_part is not None and think_part[1]
    if think_part is None and (close := _THINK_CLOSE.search(cleaned)):
        think_part = (cleaned[: close.start()], True)  # "<think>" lost, "</think>" kept
        closed_think = True
    think = think_part[0] if think_part else ""
    # A think cut off at "<answer>" (no "</think>"): the answer tag ends the reasoning.
    if think and not closed_think and (answer_open := _ANSWER_OPEN.search(think)):
        think = think[: answer_open.start()]
    think = _ANY_TAG.sub(" ", think).strip()

    answer_part = _between(cleaned, _ANSWER_OPEN, _ANSWER_CLOSE)
    if answer_part is not None:
        answer, closed_answer = answer_part[0].strip(), answer_part[1]
        label = label_from_text(answer)
    else:
        closed_answer = False
        # No answer tag: the text after the reasoning, else a bare answer ("Angry."), else the last
        # sentence of the reasoning (models often conclude there before running out of tokens).
        closes = list(_THINK_CLOSE.finditer(cleaned))
        tail = cleaned[closes[-1].end():] if closes else ("" if think_part else cleaned)
        answer = _ANY_TAG.sub(" ", tail).strip()
        label = label_from_text(answer) if answer else None
        if label is None and think:
            sentences = [s for s in re.split(r"(?<=[.!?。！？])\s*", think) if s.strip()]
            label = label_from_text(sentences[-1]) if sentences else None
            answer = sentences[-1].strip() if label and sentences else answer
    well_formed = closed_think and closed_answer
    return ParsedAnswer(label=label, answer=answer, think=think, well_formed=well_formed)
