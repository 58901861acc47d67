"""SenseVoice-Small as the ASR engine (CALLPULSE_ASR_ENGINE=sensevoice): a tiny random release laid
out like the real one, chosen through the worker's runtime from settings, transcribing real call
audio into the transcript rows the other engines give (timed words inside the speech windows, one
speaker per channel, the window's language)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpulse.settings import Settings
from tests.funasr_checkpoints import build_sensevoice
from tests.support import EXAMPLE
from worker.pipeline.speech import asr
from worker.pipeline.speech.sensevoice_asr import SenseVoiceAsr

ROLES = {0: "agent", 1: "customer"}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sensevoice(tmp_path_factory.mktemp("sv-asr") / "SenseVoiceSmall")


def test_engine_setting_picks_sensevoice_and_transcribes(release: Path, tmp_path: Path) -> None:
    from worker import runtime
    from worker.pipeline.media import decode

    settings = Settings(asr_engine="sensevoice", asr_model_path=release, data_dir=tmp_path)
    model = runtime.asr_model(settings)
    assert isinstance(model, SenseVoiceAsr) and model.version.startswith("sensevoice:SenseVoiceSmall@")
    # The emotion backend's directory serves when no ASR path is given.
    shared = Settings(
        asr_engine="sensevoice", model_backend="sensevoice", model_path=release, data_dir=tmp_path
    )
    shared_asr = runtime.asr_model(shared)
    assert isinstance(shared_asr, SenseVoiceAsr) and shared_asr.version == model.version
    assert shared_asr.model is runtime.emotion_model(shared).audio  # one copy in memory, not two

    audio = decode.decode(EXAMPLE, 16_000)
    speech = [asr.Span(0, 0.5, 6.0), asr.Span(1, 2.0, 9.5), asr.Span(1, 12.0, 14.0)]
    rows = model.transcribe(audio, ROLES, speech=speech, batch_size=2)
    assert rows, "random weights still emit tokens: the pipeline must carry them through"
    windows = asr.plan_windows(speech, audio.duration_s)
    for row in rows:
        assert row["speaker"] in ("agent", "customer")
        assert row["language"] in ("zh", "en", "yue", "ja", "ko")
        assert row["words"], row
        inside = [w for w in windows if w.start_s - 1e-3 <= row["start_s"] and row["end_s"] <= w.end_s + 1e-3]
        assert inside, (row["start_s"], row["end_s"])
        for start_s, end_s, text, probability in row["words"]:  # to_rows' [start, end, text, p]
            assert row["start_s"] - 1e-3 <= start_s <= end_s <= row["end_s"] + 1e-3
            assert 0.0 <= probability <= 1.0 and text


def test_language_codes_and_missing_directory(release: Path, tmp_path: Path) -> None:
    from worker import runtime

    model = runtime.asr_model(Settings(asr_engine="sensevoice", asr_model_path=release, data_dir=tmp_path))
    assert isinstance(model, SenseVoiceAsr)
    assert model.language_code("zh-CN") == "zh" and model.language_code("en_US") == "en"
    assert model.language_code("de") is None and model.language_code(None) is None
    with pytest.raises(asr.AsrUnavailable, match="CALLPULSE_ASR_MODEL_PATH"):
        runtime.asr_model(Settings(asr_engine="sensevoice", data_dir=tmp_path))
    with pytest.raises(asr.AsrUnavailable, match=r"not a usable SenseVoice-Small release.*no config\.yaml"):
        runtime.asr_model(Settings(asr_engine="sensevoice", asr_model_path=tmp_path, data_dir=tmp_path))
