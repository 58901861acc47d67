"""The default speech recognition, run for real: the bundled Whisper-base through faster-whisper on
the example call's real read speech (two Rainbow Passage sentences from VCTK, whose text is public,
give a word error rate). Checks what supervisors and the text model rely on: the words, their times
inside the segment they were said in, the language, the probabilities; the model file's integrity
check; silence decoded into nothing; and the CLI's default (words without asking) and --no-asr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import EXAMPLE
from worker.pipeline.contracts import DecodedAudio
from worker.pipeline.media import decode
from worker.pipeline.speech import asr, whisper_ct2
from worker.pipeline.speech import vad as segment
from worker.pipeline.text.transcript_index import TranscriptIndex

ROLES = {0: "agent", 1: "customer"}
# The Rainbow Passage (public text), read by VCTK p240 (agent, 0.4 s) and p260 (customer, 6.0 s).
REFERENCE = {
    0: "the norsemen considered the rainbow as a bridge over which the gods passed from earth to their "
       "home in the sky",
    1: "these take the shape of a long round arch with its path high above and its two ends apparently "
       "beyond the horizon",
}


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asr-data")


@pytest.fixture(scope="module")
def model(data_dir: Path) -> whisper_ct2.Ct2Asr:
    return whisper_ct2.load_model(None, data_dir, "cpu", "auto", threads=2)


@pytest.fixture(scope="module")
def call() -> tuple[DecodedAudio, list[asr.Span]]:
    from worker import runtime

    audio = decode.decode(EXAMPLE, 16_000)
    segments = segment.run(runtime.vad_model(), audio, ROLES, segment.SegmentationConfig())
    return audio, [asr.Span(s.channel, s.start_s, s.end_s) for s in segments]


def test_bundled_model_is_assembled_once_and_a_corrupt_file_is_refused(data_dir: Path,
                                                                        tmp_path: Path) -> None:
    folder = whisper_ct2.bundled_model_dir(data_dir)
    model_bin = folder / "model.bin"
    assert model_bin.stat().st_size == whisper_ct2.BUNDLED_SIZE
    assert whisper_ct2._sha256(model_bin) == whisper_ct2.BUNDLED_SHA256
    assert {"config.json", "tokenizer.json", "vocabulary.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob(".*.tmp")), "no temporary file is left behind"
    stamp = model_bin.stat().st_mtime_ns
    assert whisper_ct2.bundled_model_dir(data_dir) == folder
    assert model_bin.stat().st_mtime_ns == stamp, "a good model.bin is not rewritten"

    # A copy with one byte flipped: refused with the reason, at every load, never repaired silently.
    other = tmp_path / "data"
    copy = other / "models" / folder.name
    copy.mkdir(parents=True)
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with (copy / "model.bin").open("r+b") as f:
        f.seek(10_000_000)
        byte = f.read(1)
        f.seek(10_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(asr.AsrUnavailable, match=r"corrupt .*sha256 [0-9a-f]{64}; expected 145217607 bytes"):
        whisper_ct2.load_model(None, other)
    (copy / "model.bin").write_bytes(b"truncated")
    with pytest.raises(asr.AsrUnavailable, match="refusing to load the bundled Whisper-base model"):
        whisper_ct2.bundled_model_dir(other)


def test_real_speech_words_times_language(model: whisper_ct2.Ct2Asr,
                                          call: tuple[DecodedAudio, list[asr.Span]]) -> None:
    audio, speech = call
    rows = model.transcribe(audio, ROLES, speech=speech, batch_size=4)
    assert {r["channel"] for r in rows} == {0, 1}
    assert {r["language"] for r in rows} == {"en"}, "English detected on each channel"
    assert {r["speaker"] for r in rows} == {"agent", "customer"}
    for channel, reference in REFERENCE.items():
        first = min((r for r in rows if r["channel"] == channel), key=lambda r: r["start_s"])
        assert wer(reference, normalise(first["text"])) <= 0.1, first["text"]
    index = TranscriptIndex.from_rows(rows)
    total = sum(len(r["words"]) for r in rows)
    assert total > 80
    placed = 0
    for sp in speech:
        words = index.words(sp.start_s, sp.end_s, sp.channel)
        placed += len(words)
        for w in words:
            assert 0.0 < (w.probability or 0.0) <= 1.0
            assert sp.start_s - 0.05 <= w.start_s <= w.end_s <= sp.end_s + 0.05, "word inside its segment"
    assert placed == total, "every word lands in the segment it was said in"


def test_silence_and_noise_give_no_words(model: whisper_ct2.Ct2Asr) -> None:
    rng = np.random.default_rng(0)
    samples = np.stack([np.zeros(16_000 * 8, np.float32),
                        (rng.standard_normal(16_000 * 8) * 0.003).astype(np.float32)])
    audio = DecodedAudio(samples, 16_000, 8.0)
    rows = model.transcribe(audio, ROLES, speech=[asr.Span(0, 0.5, 7.5), asr.Span(1, 0.5, 7.5)])
    assert rows == []


def test_language_codes(model: whisper_ct2.Ct2Asr) -> None:
    assert model.language_code("de-DE") == "de"
    assert model.language_code("pt_BR") == "pt"
    assert model.language_code("en") == "en"
    assert model.language_code("klingon") is None and model.language_code(None) is None


def _cli(tmp: Path, *args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CALLPULSE_ASR_ENABLED"}  # the product default
    env.update({"CALLPULSE_DATA_DIR": str(data_dir), "CALLPULSE_DATABASE_URL": f"sqlite:///{tmp}/cp.db"})
    return subprocess.run([sys.executable, "-m", "callpulse.cli", "analyze", str(EXAMPLE), "--roles",
                           "agent,customer", *args], capture_output=True, text=True, env=env, timeout=900)


def test_cli_transcribes_by_default_and_not_with_no_asr(tmp_path: Path, data_dir: Path) -> None:
    run = _cli(tmp_path, "--format", "json", "--quiet", data_dir=data_dir)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["transcript_source"] == "asr" and result["language"] == "en"
    customer = [s for s in result["segments"] if s["role"] == "customer"]
    assert customer and all(s["words"] for s in result["segments"]), "agents' words are transcribed too"
    for seg in result["segments"]:
        for w in seg["words"]:
            assert set(w) >= {"word", "start_s", "end_s", "probability"}
            assert seg["start_s"] - 0.05 <= w["start_s"] <= w["end_s"] <= seg["end_s"] + 0.05
    assert all(s["label"] is None for s in result["segments"] if s["role"] == "agent")
    assert any(item["modality"] == "text" for s in customer for item in s["reasoning"]), \
        "the ASR words reach the text model"
    from callpulse.local import format_table

    table_text = format_table({**result, "file": "demo_call.ogg"})
    assert "words: asr (en)" in table_text and "words: The Norsemen considered the rainbow" in table_text

    table = _cli(tmp_path, "--no-asr", data_dir=data_dir)
    assert table.returncode == 0, table.stderr
    assert "words:" not in table.stdout and "Norsemen" not in table.stdout

    quiet = _cli(tmp_path, "--no-asr", "--format", "json", data_dir=data_dir)
    assert json.loads(quiet.stdout)["transcript_source"] is None


def test_cli_refuses_a_corrupt_model_with_its_reason(tmp_path: Path, data_dir: Path) -> None:
    folder = whisper_ct2.bundled_model_dir(tmp_path / "data")
    (folder / "model.bin").write_bytes(b"\0" * 1024)
    run = _cli(tmp_path, "--quiet", data_dir=tmp_path / "data")
    assert run.returncode == 2
    assert "corrupt" in run.stderr and whisper_ct2.BUNDLED_SHA256 in run.stderr and "--no-asr" in run.stderr


def test_long_channels_are_transcribed_in_stretches_with_the_same_words(
        model: whisper_ct2.Ct2Asr, call: tuple[DecodedAudio, list[asr.Span]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel is converted to float32 one stretch at a time (never a 6-hour channel at once);
    cutting the call into stretches changes neither the words nor their absolute times."""
    from worker import runtime

    one, _ = call
    twice = np.concatenate([one.samples, one.samples], axis=1)
    audio = DecodedAudio(twice, 16_000, twice.shape[1] / 16_000)
    speech = [asr.Span(s.channel, s.start_s, s.end_s) for s in segment.run(
        runtime.vad_model(), audio, ROLES, segment.SegmentationConfig()) if s.channel == 1]
    whole = model.transcribe(audio, ROLES, speech=speech, batch_size=4, language="en")
    monkeypatch.setattr(whisper_ct2, "STRETCH_S", 12.0)
    assert len(whisper_ct2._stretches(asr.plan_windows(speech, audio.duration_s))) > 1
    pieces = model.transcribe(audio, ROLES, speech=speech, batch_size=4, language="en")

    def words(rows: list[dict]) -> list[tuple[int, str, float]]:
        return [(r["channel"], w[2], w[0]) for r in rows for w in r["words"]]

    got, want = words(pieces), words(whole)
    assert [(c, t) for c, t, _ in got] == [(c, t) for c, t, _ in want]
    assert max(abs(a[2] - b[2]) for a, b in zip(got, want, strict=True)) < 0.05
