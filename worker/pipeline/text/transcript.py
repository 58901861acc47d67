"""Parse a client's own transcript (CallPulse/Whisper JSON, WebVTT, SRT) into timed utterances.

Pure: bytes in, validated utterances out. Any malformed input raises TranscriptError whose `.reason`
is one sentence naming the problem and where it is, returned verbatim by the API as a 422 detail.
"""

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from worker.pipeline.contracts import Word

MAX_INPUT_BYTES = 64 * 1024 * 1024  # JSON with word timings is ~10x its text; refuse before parsing
MAX_TEXT_CHARS = 5_000_000  # "5 MB of text": a 10-hour call is well under 1 MB
MAX_UTTERANCES = 100_000
MAX_WORDS = 500_000  # ~5x a 10-hour call; parsing that many takes seconds
MAX_SPEAKER_CHARS = 64  # segment.speaker is VARCHAR(64)
TOLERANCE_S = 0.05  # ASR timings are rounded to 10-50 ms: smaller disagreements are not errors
DURATION_TOLERANCE_S = 0.5  # transcripts are often made from a slightly differently padded file
WORD_GAP_S = 1.0  # a pause longer than this in a bare word list starts a new utterance

START_KEYS = ("start", "start_s", "start_time")
END_KEYS = ("end", "end_s", "end_time")
WORD_TEXT_KEYS = ("punctuated_word", "word", "text")  # Deepgram's punctuated form first
UTTERANCE_TEXT_KEYS = ("text", "transcript")
BOM = b"\xef\xbb\xbf"


class TranscriptError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Utterance:
    start_s: float
    end_s: float
    text: str
    speaker: str | None
    channel: int | None
    words: tuple[Word, ...] = ()  # word timings when the transcript gave them
    language: str | None = None  # our ASR's language of the channel ("en")


@dataclass
class _Raw:
    where: str  # "utterance 3", "cue 4 (line 17)": how an error message names it
    start: float
    end: float
    text: str
    speaker: str | None = None
    channel: int | None = None
    words: tuple[Word, ...] = ()


def _ts(*times: float) -> str:
    return "–".join(f"{h}:" * bool(h) + f"{m // 600:02d}:{m % 600 // 10:02d}.{m % 10}"
                    for h, m in (divmod(round(min(t, 1e15) * 10), 36000) for t in times))


def _jtype(v: Any) -> str:
    return "null" if v is None else _KINDS.get(type(v), "a number")


_KINDS: dict[Any, str] = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"\s+")
_CLOCK = re.compile(r"(?:(\d{1,6}):)?(\d{1,6}):(\d{1,2}(?:[.,]\d{0,9})?)|(\d{1,9}(?:\.\d{0,9})?)")


def _clean(s: str) -> str:
    # JSON may carry lone surrogates ("\ud800") and NULs: neither can be stored in Postgres text.
    s = s.encode("utf-8", "replace").decode("utf-8")
    return _SPACES.sub(" ", _CONTROL.sub("", s)).strip()


def _clock(s: str) -> float | None:
    """Seconds of "hh:mm:ss.mmm", "mm:ss.mmm" (comma allowed, as in SRT) or "12.5"; None if not one."""
    m = _CLOCK.fullmatch(s.strip())
    if m is None or m.group(4) is not None:
        return None if m is None else float(m.group(4))
    hours, minutes, secs = int(m.group(1) or 0), int(m.group(2)), float(m.group(3).replace(",", "."))
    if secs >= 60 or (m.group(1) is not None and minutes >= 60):
        return None
    return hours * 3600 + minutes * 60 + secs


def _first(item: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((item[k] for k in keys if k in item), None)


def _time(item: dict[str, Any], keys: Sequence[str], where: str, what: str) -> float:
    v = _first(item, keys)
    if v is None:
        raise TranscriptError(f"{where} has no {what} time")
    if isinstance(v, str):
        t = _clock(v)
        if t is None:
            raise TranscriptError(f"{where}: {what} time {v[:40]!r} is neither seconds nor hh:mm:ss.mmm")
    elif type(v) is float or type(v) is int:  # bool is no time
        t = float(v) if type(v) is float or abs(v) < 10**300 else math.inf
    else:
        raise TranscriptError(f"{where}: {what} time must be a number of seconds, not {_jtype(v)}")
    if not math.isfinite(t) or t < 0:
        raise TranscriptError(f"{where}: {what} time is {'negative' if t < 0 else 'not finite'} ({v!r:.40})")
    return t


def _text(v: Any, where: str, what: str) -> str:
    if not isinstance(v, str):
        raise TranscriptError(f"{where}: {what} must be a string, not {_jtype(v)}")
    return _clean(v)


def _speaker(v: Any, where: str) -> str | None:
    if v is None:
        return None
    s = _text(str(v) if type(v) is int else v, where, "speaker")  # some diarizers number speakers
    if len(s) > MAX_SPEAKER_CHARS:
        raise TranscriptError(f"{where}: speaker name is longer than {MAX_SPEAKER_CHARS} characters")
    return s or None


def _who(item: dict[str, Any], where: str) -> tuple[str | None, int | None]:
    channel = item.get("channel")
    if channel is not None and type(channel) is not int:
        raise TranscriptError(f"{where}: channel must be a whole number, not {_jtype(channel)}")
    return _speaker(item.get("speaker"), where), channel


def _json_word(w: Any, where: str) -> Word:
    if not isinstance(w, dict):
        raise TranscriptError(f"{where} is not a JSON object")
    start, end = _time(w, START_KEYS, where, "start"), _time(w, END_KEYS, where, "end")
    text = _text(_first(w, WORD_TEXT_KEYS), where, "the word")
    if end < start:
        raise TranscriptError(f"{where} {text[:40]!r} ({_ts(start, end)}) ends before it starts")
    return Word(start, end, text)


def _json_utterance(item: Any, where: str) -> _Raw:
    if not isinstance(item, dict):
        raise TranscriptError(f"{where} is not a JSON object")
    start, end = _time(item, START_KEYS, where, "start"), _time(item, END_KEYS, where, "end")
    raw_words = [] if item.get("words") is None else item["words"]
    if not isinstance(raw_words, list):
        raise TranscriptError(f"{where}: words must be a list, not {_jtype(raw_words)}")
    # WhisperX leaves digits it could not align without times: such an utterance keeps its text but
    # loses its word timings (words_in then spreads them) rather than being refused.
    untimed = any(isinstance(w, dict) and _first(w, START_KEYS + END_KEYS) is None for w in raw_words)
    words = [Word(start, end, _text(_first(w, WORD_TEXT_KEYS), f"{where}, word {i}", "the word"))
             if untimed and isinstance(w, dict) else _json_word(w, f"{where}, word {i}")
             for i, w in enumerate(raw_words, 1)]
    words = [w for w in words if w.text]
    raw_text = _first(item, UTTERANCE_TEXT_KEYS)
    text = " ".join(w.text for w in words) if raw_text is None else _text(raw_text, where, "text")
    return _Raw(where, start, end, text, *_who(item, where), () if untimed else tuple(words))


def _group_words(items: list[Any]) -> list[_Raw]:
    """A bare word list: consecutive words of one speaker/channel, split at pauses, make an utterance."""
    if len(items) > MAX_WORDS:
        raise TranscriptError(f"the transcript has more than {MAX_WORDS} words")
    rows = sorted(((_json_word(w, f"word {i}"), _who(w, f"word {i}"), i) for i, w in enumerate(items, 1)),
                  key=lambda r: r[0].start_s)
    out: list[_Raw] = []
    groups: list[list[Word]] = []
    for word, who, i in rows:
        if not out or who != (out[-1].speaker, out[-1].channel) or word.start_s - out[-1].end > WORD_GAP_S:
            out.append(_Raw(f"the utterance starting at word {i}", word.start_s, word.end_s, "", *who))
            groups.append([])
        out[-1].end = max(out[-1].end, word.end_s)
        groups[-1].append(word)
    for raw, group in zip(out, groups, strict=True):
        raw.words = tuple(w for w in group if w.text)
        raw.text = " ".join(w.text for w in raw.words)
    return out


def _from_json(text: str) -> list[_Raw]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: "[[[[...", ValueError: a 5000-digit number
        why = (f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError)
               else "nested too deeply" if isinstance(e, RecursionError) else str(e).split(":")[0])
        raise TranscriptError(f"the transcript is not valid JSON ({why})") from None
    if isinstance(doc, dict) and isinstance(doc.get("results"), dict) and "utterances" in doc["results"]:
        doc = doc["results"]  # Deepgram with utterances=true
    key = next((k for k in ("utterances", "segments", "words") if isinstance(doc, dict) and k in doc), None)
    if key is None and not isinstance(doc, list):
        raise TranscriptError('not a transcript: the JSON has none of "utterances", "segments" or "words"')
    items, what = (doc, "the list") if key is None else (doc[key], f'"{key}"')
    if not isinstance(items, list) or not items:
        raise TranscriptError(f"the transcript has no utterances ({what} is empty)" if items == [] else
                              f"not a transcript: {what} must be a list, not {_jtype(items)}")
    if key == "words":
        return _group_words(items)
    if len(items) > MAX_UTTERANCES:
        raise TranscriptError(f"the transcript has more than {MAX_UTTERANCES} utterances")
    return [_json_utterance(item, f"{'segment' if key == 'segments' else 'utterance'} {i}")
            for i, item in enumerate(items, 1)]


_SKIPPED_BLOCK = re.compile(r"(NOTE|STYLE|REGION)(\s|$)")
_TIMING = re.compile(r"\s*(\S+?)\s*-->\s*(\S+)")
# Bounded repeats: an unclosed "<v " must not make a 64 MB file take quadratic time.
_CUE_TOKEN = re.compile(r"<v(?:\.[^\s<>]{0,64})?(?:\s([^<>]{0,256}))?>|<(\d[\d:.,]{0,20})>")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,256}>|</>")
# "Agent 1: ...", "spk_0: ...": a name of at most 3 words, before any other text
_PREFIX = re.compile(r"([^\W\d][\w'.-]{0,30}(?: [\w'.-]{1,30}){0,2}):\s+(?=\S)")


def _plain(s: str) -> str:
    return _clean(html.unescape(_TAG.sub("", s)))


def _cue(where: str, start: float, end: float, payload: str) -> list[_Raw]:
    """One cue: voice spans give speakers, inline timestamps give word (phrase) timings."""
    chunks: list[tuple[str | None, float, str]] = []  # (speaker, start, text) between tokens
    speaker: str | None = None
    t, pos, timed, voiced = start, 0, False, False
    for m in _CUE_TOKEN.finditer(payload):
        chunks.append((speaker, t, payload[pos:m.start()]))
        pos = m.end()
        if m.group(2) is not None:
            stamp = _clock(m.group(2))
            if stamp is None:
                raise TranscriptError(f"{where}: bad inline timestamp <{m.group(2)}>")
            if not t <= stamp <= end + TOLERANCE_S:
                raise TranscriptError(f"{where} ({_ts(start, end)}): inline timestamp <{m.group(2)}> lies "
                                      + ("after the cue's end" if stamp > end else "before an earlier one"))
            t, timed = stamp, True
        else:
            speaker, voiced = _speaker(_plain(m.group(1) or ""), where), True
    chunks.append((speaker, t, payload[pos:]))
    ends = [end] * len(chunks)  # a phrase lasts until the next timestamp (chunks split by <v> share one)
    for i in range(len(chunks) - 2, -1, -1):
        ends[i] = chunks[i + 1][1] if chunks[i + 1][1] != chunks[i][1] else ends[i + 1]
    groups: list[tuple[str | None, list[str], list[Word]]] = []  # consecutive chunks of one speaker
    for (spk, c_start, raw), c_end in zip(chunks, ends, strict=True):
        text = _plain(raw)
        if not text:
            continue
        if not voiced:  # no <v> tag: a leading "Agent: " names the speaker of the whole cue
            named = None if groups else _PREFIX.match(text)
            spk, text = (_speaker(named[1], where), text[named.end():]) if named else (spk, text)
        if not groups or groups[-1][0] != spk:
            groups.append((spk, [], []))
        groups[-1][1].append(text)
        groups[-1][2].extend([Word(c_start, max(c_start, c_end), text)] if timed else [])
    return [_Raw(f"{where}, voice {j}" if j > 1 else where, start, end, " ".join(texts), spk, None,
                 tuple(words)) for j, (spk, texts, words) in enumerate(groups, 1)]


def _from_vtt(text: str, srt: bool) -> list[_Raw]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[_Raw] = []
    n = 0
    for first, line in enumerate(lines):  # blocks are runs of non-blank lines
        if not line.strip() or (first and lines[first - 1].strip()):
            continue
        block = lines[first:next((j for j in range(first, len(lines)) if not lines[j].strip()), None)]
        k = next((i for i, line in enumerate(block) if "-->" in line), None)
        if k is None or (not srt and _SKIPPED_BLOCK.match(block[0])):
            continue  # the header, NOTE/STYLE/REGION, or text that is no cue (players ignore it too)
        n += 1
        where = f"cue {n} (line {first + k + 1})"
        m = _TIMING.match(block[k])
        start, end = (_clock(m.group(1)), _clock(m.group(2))) if m else (None, None)
        if start is None or end is None:
            raise TranscriptError(f"{where}: bad timing line {block[k].strip()[:60]!r}")
        out.extend(_cue(where, start, end, "\n".join(block[k + 1:])))
        if len(out) > MAX_UTTERANCES:
            raise TranscriptError(f"the transcript has more than {MAX_UTTERANCES} utterances")
    return out


def _decode(data: bytes) -> str:
    encoding, skip = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8", 3 * (data[:3] == BOM)
    try:
        return data[skip:].decode(encoding)  # the UTF-16 codec reads the BOM for the byte order
    except UnicodeDecodeError as e:
        raise TranscriptError(f"the transcript is not valid {encoding.upper()} text (byte "
                              f"0x{data[skip + e.start]:02x} at offset {skip + e.start})") from None


def detect_format(text: str, filename: str | None = None, content_type: str | None = None) -> str | None:
    """ "json", "webvtt" or "srt" from the content, else from the file name / content type; None if none."""
    head = text.lstrip("\ufeff \t\r\n")
    if head[:1] in ("{", "[") or head.startswith("WEBVTT"):
        return "json" if head[:1] in ("{", "[") else "webvtt"
    if re.match(r"\d+[ \t]*\r?\n[^\n]*-->", head):
        return "srt"
    ext = (filename or "").rpartition(".")[2].lower() if "." in (filename or "") else ""
    for fmt, marks in (("webvtt", ("vtt",)), ("srt", ("srt", "subrip")), ("json", ("json",))):
        if ext in marks or any(mark in (content_type or "").lower() for mark in marks):
            return fmt
    return None


def parse_transcript(data: bytes, *, filename: str | None = None, content_type: str | None = None,
                     duration_s: float | None = None, channels: int | None = None) -> list[Utterance]:
    """Validated utterances sorted by start; TranscriptError (and nothing else) for unusable bytes."""
    return parse_with_format(data, filename=filename, content_type=content_type, duration_s=duration_s,
                             channels=channels)[1]


def parse_with_format(data: bytes, *, filename: str | None = None, content_type: str | None = None,
                      duration_s: float | None = None, channels: int | None = None,
                      ) -> tuple[str, list[Utterance]]:
    """parse_transcript, plus the detected format ("json", "webvtt" or "srt") for transcript.format."""
    if len(data) > MAX_INPUT_BYTES:
        raise TranscriptError(f"the transcript file is larger than {MAX_INPUT_BYTES // 2**20} MB")
    text = _decode(data).lstrip("\ufeff")
    if not text.strip():
        raise TranscriptError("the transcript is empty")
    fmt = detect_format(text, filename, content_type)
    if fmt is None:
        raise TranscriptError('not a transcript: expected JSON ({"utterances": [...]}, {"words": [...]} or '
                              '{"segments": [...]}), WebVTT (starting with "WEBVTT") or SRT')
    raws = _from_json(text) if fmt == "json" else _from_vtt(text, srt=fmt == "srt")
    return fmt, _validate(raws, duration_s, channels)


def _validate(raws: list[_Raw], duration_s: float | None, channels: int | None) -> list[Utterance]:
    raws = [r for r in raws if r.text]  # empty segments are common in ASR output and carry nothing
    if not raws:
        raise TranscriptError("the transcript has no utterance with text")
    for count, limit, what in ((len(raws), MAX_UTTERANCES, "utterances"),
                               (sum(len(r.words) for r in raws), MAX_WORDS, "words"),
                               (sum(len(r.text) for r in raws), MAX_TEXT_CHARS, "characters of text")):
        if count > limit:
            raise TranscriptError(f"the transcript has more than {limit} {what}")
    for r in raws:
        if r.end < r.start:
            raise TranscriptError(f"{r.where} ({_ts(r.start, r.end)}) ends before it starts")
        if duration_s is not None and r.end > duration_s + DURATION_TOLERANCE_S:
            raise TranscriptError(f"{r.where} ends at {_ts(r.end)}, after the end of the recording "
                                  f"({duration_s:.1f} s)")
        if r.channel is not None and (r.channel < 0 or (channels is not None and r.channel >= channels)):
            has = f"; the recording has {channels} channels (0–{channels - 1})" if channels else ""
            raise TranscriptError(f"{r.where}: channel {r.channel} does not exist{has}")
        for i, w in enumerate(r.words, 1):  # each word's own end >= start was checked when read
            if w.start_s < r.start - TOLERANCE_S or w.end_s > r.end + TOLERANCE_S:
                raise TranscriptError(f"{r.where} ({_ts(r.start, r.end)}): word {i} {w.text[:40]!r} "
                                      f"({_ts(w.start_s, w.end_s)}) lies outside the utterance")
    raws.sort(key=lambda r: (r.start, r.end))
    latest: dict[tuple[str | None, int | None], _Raw] = {}
    for r in raws:
        key = (r.speaker, r.channel)  # nothing says two unlabelled utterances are one person's
        prev = latest.get(key) if key != (None, None) else None
        if prev is not None and r.start < prev.end - TOLERANCE_S:
            who = f"speaker {r.speaker!r}" if r.speaker is not None else f"channel {r.channel}"
            raise TranscriptError(f"{r.where} overlaps {prev.where} of the same {who} (starts at "
                                  f"{_ts(r.start)}, before {_ts(prev.end)})")
        if prev is None or r.end > prev.end:
            latest[key] = r
    return [Utterance(r.start, r.end, r.text, r.speaker, r.channel, r.words) for r in raws]


def spread_words(u: Utterance) -> list[Word]:
    step = (u.end_s - u.start_s) / max(len(tokens := u.text.split()), 1)
    return [Word(u.start_s + i * step, u.start_s + (i + 1) * step, tok) for i, tok in enumerate(tokens)]


def words_in(utterances: Iterable[Utterance], start_s: float, end_s: float, *, channel: int | None = None,
             speaker: str | None = None) -> list[Word]:
    """Words whose midpoint lies in [start_s, end_s], from utterances on `channel` (an utterance without a
    channel matches any) and by `speaker` (exact match) when given. Utterances without word timings get
    their words spread evenly over their span, so those times are approximate."""
    out: list[Word] = []
    for u in utterances:
        if (channel is not None and u.channel not in (None, channel)) or speaker not in (None, u.speaker):
            continue
        if u.end_s + TOLERANCE_S >= start_s and u.start_s - TOLERANCE_S <= end_s:
            out.extend(w for w in (u.words or spread_words(u))
                       if start_s <= (w.start_s + w.end_s) / 2 <= end_s)
    return sorted(out, key=lambda w: (w.start_s, w.end_s))


def on_channel(u: Utterance, channel: int | None) -> Utterance:
    """`u` placed on `channel` (its speaker is named after that channel's role); a given channel wins."""
    return u if channel is None or u.channel is not None else replace(u, channel=channel)


def to_rows(utterances: Iterable[Utterance]) -> list[dict[str, Any]]:
    """The JSON stored in transcript.utterances; words as [start_s, end_s, text] triples, plus the
    probability and the utterance's language where our ASR gave them."""
    return [{"start_s": u.start_s, "end_s": u.end_s, "text": u.text, "speaker": u.speaker,
             "channel": u.channel, "words": [_word_row(w) for w in u.words],
             **({"language": u.language} if u.language else {})} for u in utterances]


def _word_row(w: Word) -> list[Any]:
    return [w.start_s, w.end_s, w.text] + ([] if w.probability is None else [w.probability])


def from_rows(rows: Iterable[dict[str, Any]]) -> list[Utterance]:
    """Utterances back from to_rows' JSON (validated when it was stored)."""
    return [Utterance(r["start_s"], r["end_s"], r["text"], r.get("speaker"), r.get("channel"),
                      tuple(_word(w, r.get("language")) for w in r.get("words") or ()),
                      r.get("language")) for r in rows]


def _word(w: list[Any], language: str | None) -> Word:
    return Word(w[0], w[1], w[2], w[3] if len(w) > 3 else None, language)
