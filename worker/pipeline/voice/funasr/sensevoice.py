"""`sensevoice` backend: SenseVoice-Small as released (config.yaml, model.pt, am.mvn and the
`*.bpe.model` SentencePiece vocabulary), run by this project's own implementation
(sensevoice_net.py, fbank.py, spm.py) with strict key matching. One pass over a segment gives:

* the emotion — the CTC distribution at the emotion query position, over the release's seven
  emotion tags (HAPPY, SAD, ANGRY, NEUTRAL, FEARFUL, DISGUSTED, SURPRISED) plus EMO_UNKNOWN, which
  keeps its raw name `unknown` (left out of the canonical scores; lowers the confidence);
* the audio event (Laughter, Cry, Cough, Applause, BGM, Sneeze, Breath, ...) at the event position:
  anything but plain speech becomes an evidence item over the segment;
* the language (zh, en, yue, ja, ko, or nospeech) at the language position;
* the words with times, from greedy CTC over the remaining frames (one frame per 60 ms) — the same
  decode the ASR engine uses (`transcribe_clip`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from worker.pipeline import hf_common, reasoning
from worker.pipeline.batching import OomGuard
from worker.pipeline.contracts import EmotionResult, Evidence, SegmentInput
from worker.pipeline.voice.funasr import fbank, release, spm
from worker.pipeline.voice.funasr.sensevoice_net import (
    LANGUAGE_QUERY,
    QUERIES,
    SenseVoiceConfig,
    SenseVoiceNet,
)
from worker.pipeline.voice.result import result_from_raw

NAME = "sensevoice"
CMVN = "am.mvn"
DEFAULT_MAX_BATCH = 8
BLANK = 0
EMOTION_TAGS = {"HAPPY": "happy", "SAD": "sad", "ANGRY": "angry", "NEUTRAL": "neutral", "FEARFUL": "fearful",
                "DISGUSTED": "disgusted", "SURPRISED": "surprised", "EMO_UNKNOWN": "unknown"}
EVENT_TAGS = ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", "Sing",
              "Speech_Noise", "GBG", "Event_UNK")
# Events that say nothing beyond "someone is talking" (or nothing at all) are not evidence.
QUIET_EVENTS = {"Speech", "Event_UNK", "GBG", "Speech_Noise"}
LANGUAGES = ("zh", "en", "yue", "ja", "ko", "nospeech")


def tag(name: str) -> str:
    return f"<|{name}|>"


@dataclass
class Token:
    piece: str
    first: int  # first and last speech frame (after the query frames) the token was emitted on
    last: int
    probability: float


@dataclass
class Analysis:
    """One segment's pass: tag distributions and the words' tokens."""

    language: str
    language_p: float
    emotions: dict[str, float]
    events: dict[str, float]
    tokens: list[Token] = field(default_factory=list)


@dataclass(frozen=True)
class TimedWord:
    start_s: float  # from the start of the clip
    end_s: float
    text: str
    probability: float


class SenseVoiceModel:
    """EmotionModel over a SenseVoice-Small release (and the ASR engine's recogniser)."""

    name = NAME

    def __init__(self, net: SenseVoiceNet, vocab: spm.Vocabulary, front: fbank.FrontEnd,
                 cmvn: tuple[np.ndarray, np.ndarray] | None, version: str, device: torch.device,
                 dtype: torch.dtype, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.net, self.vocab, self.front, self.cmvn = net, vocab, front, cmvn
        self.version, self.device, self.dtype = version, device, dtype
        self.sample_rate = front.sample_rate
        self.guard = OomGuard(max_batch)
        ids = vocab.ids()
        missing = [tag(t) for t in (*EMOTION_TAGS, *LANGUAGES) if tag(t) not in ids]
        if missing:
            raise release.CheckpointMismatch(
                f"sensevoice: the vocabulary lacks the release's tags {release.listing(missing)}")
        self.emotion_ids = {EMOTION_TAGS[t]: ids[tag(t)] for t in EMOTION_TAGS}
        self.event_ids = {t: ids[tag(t)] for t in EVENT_TAGS if tag(t) in ids}
        self.language_ids = {t: ids[tag(t)] for t in LANGUAGES}

    # --- emotion backend ---
    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        analyses = self.analyze([s.audio for s in batch], [s.sample_rate for s in batch],
                                [s.language for s in batch])
        return [self._result(segment, analysis) for segment, analysis in zip(batch, analyses, strict=True)]

    def _result(self, segment: SegmentInput, analysis: Analysis) -> EmotionResult:
        result = result_from_raw(segment, analysis.emotions, raw_mass_confidence=True)
        result.evidence[0]["text"] = result.evidence[0]["text"].replace(
            "Voice classifier", f"SenseVoice (language {analysis.language})", 1)
        event = max(analysis.events, key=analysis.events.__getitem__) if analysis.events else "Speech"
        if event not in QUIET_EVENTS:
            end_s = max(segment.end_s, segment.start_s)
            result.evidence.insert(1, event_evidence(event, analysis.events[event], segment.start_s, end_s))
            # The event is the strongest cue a supervisor can check by ear: the summary names it.
            result.reasoning_text = reasoning.reasoning_text(result.label, result.confidence, result.evidence,
                                                             segment.start_s, end_s)
        result.modalities = {"audio": {"language": analysis.language, "event": event}}
        return result

    # --- one pass ---
    def analyze(self, waves: Sequence[np.ndarray], rates: Sequence[int],
                languages: Sequence[str | None] = (), textnorm: str = "woitn") -> list[Analysis]:
        items = [(fbank.features(hf_common.to_model_rate(w, r, self.sample_rate), self.front, self.cmvn),
                  _query_language(languages[i] if i < len(languages) else None))
                 for i, (w, r) in enumerate(zip(waves, rates, strict=True))]
        order = sorted(range(len(items)), key=lambda i: items[i][0].shape[0])
        done = self.guard.run(lambda chunk: self._forward(chunk, textnorm), [items[i] for i in order])
        out: list[Analysis | None] = [None] * len(items)
        for position, index in enumerate(order):
            out[index] = done[position]
        return [a for a in out if a is not None]

    def _forward(self, chunk: Sequence[tuple[np.ndarray, str]], textnorm: str) -> list[Analysis]:
        longest = max(f.shape[0] for f, _ in chunk)
        feats = np.zeros((len(chunk), longest, chunk[0][0].shape[1]), np.float32)
        for i, (f, _) in enumerate(chunk):
            feats[i, : f.shape[0]] = f
        lengths = torch.tensor([f.shape[0] for f, _ in chunk], device=self.device)
        with torch.inference_mode():
            logp = self.net(torch.from_numpy(feats).to(self.device, self.dtype), lengths,
                            [lang for _, lang in chunk], textnorm).cpu()
        return [self._decode(logp[i, : QUERIES + int(lengths[i])]) for i in range(len(chunk))]

    def _decode(self, logp: torch.Tensor) -> Analysis:
        probs = logp.exp()

        def among(frame: int, ids: dict[str, int]) -> dict[str, float]:
            picked = probs[frame, list(ids.values())]
            picked = picked / picked.sum().clamp_min(1e-12)
            return {name: float(p) for name, p in zip(ids, picked, strict=True)}

        languages = among(0, self.language_ids)
        language = max(languages, key=languages.__getitem__)
        tokens: list[Token] = []
        best_p, best = probs[QUERIES:].max(dim=-1)
        for frame, (token_id, p) in enumerate(zip(best.tolist(), best_p.tolist(), strict=True)):
            if token_id == BLANK:
                continue
            if tokens and tokens[-1].last == frame - 1 and self.vocab.pieces[token_id] == tokens[-1].piece:
                tokens[-1].last = frame
                tokens[-1].probability = max(tokens[-1].probability, p)
                continue
            tokens.append(Token(self.vocab.pieces[token_id], frame, frame, p))
        return Analysis(language, languages[language], among(1, self.emotion_ids),
                        among(2, self.event_ids) if self.event_ids else {}, tokens)

    # --- words (ASR) ---
    def words(self, analysis: Analysis, duration_s: float) -> list[TimedWord]:
        """Tokens grouped into words ("▁" starts one; CJK characters are words of their own), timed
        by the frames CTC emitted them on (60 ms per frame, centred as the release's timestamps)."""
        step = self.front.seconds_per_output
        words: list[TimedWord] = []
        current: list[Token] = []

        def close() -> None:
            if current:
                text = "".join(t.piece for t in current).replace(spm.SPACE, " ").strip()
                if text:
                    start = min(max(current[0].first * step - step / 2, 0.0), duration_s)
                    end = min(max((current[-1].last + 1) * step - step / 2, start), duration_s)
                    p = float(np.mean([t.probability for t in current]))
                    words.append(TimedWord(start, end, text, p))
                current.clear()

        for token in analysis.tokens:
            if token.piece.startswith("<|") and token.piece.endswith("|>"):
                close()
                continue
            if token.piece.startswith(spm.SPACE) or _spaceless(token.piece):
                close()
            current.append(token)
            if _spaceless(token.piece):
                close()
        close()
        return words


def _spaceless(piece: str) -> bool:
    """Pieces of scripts written without spaces (CJK, kana, hangul): each one is a word."""
    return any(unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalpha() for ch in piece)


def _query_language(language: str | None) -> str:
    code = (language or "auto").split("-")[0].lower()
    return code if code in LANGUAGE_QUERY else "auto"


def event_evidence(event: str, probability: float, start_s: float, end_s: float) -> Evidence:
    span = reasoning.Span(start_s, end_s)
    name = event.replace("_", " ").lower()
    return {"start_s": start_s, "end_s": end_s, "modality": "audio", "cue": "event", "value": name,
            "text": f"{name.capitalize()} heard over {span.label()} "
                    f"(SenseVoice event tag, {probability:.2f})"}


def _named_file(path: Path, configured: object, pattern: str, what: str) -> Path:
    if isinstance(configured, str) and configured and (path / Path(configured).name).is_file():
        return path / Path(configured).name
    found = sorted(path.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{path}: expected one {what} ({pattern}), found {len(found)}")
    return found[0]


def load_model(model_path: Path | None, device: str = "cpu", dtype: str = "auto",
               max_batch: int = DEFAULT_MAX_BATCH, warm: bool = True) -> SenseVoiceModel:
    """Load a release directory strictly (every parameter from model.pt, nothing left over)."""
    path = release.release_dir(model_path, NAME)
    config = release.read_config(path)
    front_conf = dict(config.get("frontend_conf") or {})
    bpe = _named_file(path, (config.get("tokenizer_conf") or {}).get("bpemodel"), "*.bpe.model",
                      "SentencePiece vocabulary")
    cmvn_file = _named_file(path, front_conf.get("cmvn_file"), CMVN, "CMVN file")
    front = fbank.FrontEnd(
        sample_rate=int(front_conf.get("fs", 16_000)), n_mels=int(front_conf.get("n_mels", 80)),
        frame_ms=float(front_conf.get("frame_length", 25)), shift_ms=float(front_conf.get("frame_shift", 10)),
        lfr_m=int(front_conf.get("lfr_m", 7)), lfr_n=int(front_conf.get("lfr_n", 6)))
    if front_conf.get("window", "hamming") != "hamming":
        raise release.CheckpointMismatch(f"sensevoice: only the hamming window is implemented, not "
                                         f"{front_conf.get('window')!r}")
    vocab = spm.read(bpe)
    cfg = SenseVoiceConfig.from_release(dict(config.get("encoder_conf") or {}), front.n_mels * front.lfr_m,
                                        len(vocab))
    net = SenseVoiceNet(cfg)
    state = release.read_weights(path)
    net.load_state_dict(release.match(net.state_dict(), state, f"sensevoice ({len(vocab)}-piece vocabulary)"),
                        strict=True)
    del state
    cmvn = fbank.read_cmvn(cmvn_file)
    if cmvn[0].shape[0] != cfg.input_size:
        raise release.CheckpointMismatch(f"sensevoice: {cmvn_file.name} has {cmvn[0].shape[0]} dims, the "
                                         f"encoder reads {cfg.input_size}")
    torch_device = hf_common.resolve_device(device)
    torch_dtype = hf_common.resolve_dtype(torch_device, dtype)
    net.to(device=torch_device, dtype=torch_dtype).eval()
    version = release.version(path, [bpe.name, cmvn_file.name, release.CONFIG])
    model = SenseVoiceModel(net, vocab, front, cmvn, version, torch_device, torch_dtype, max_batch)
    if warm:
        hf_common.warm_up(model)
    return model
