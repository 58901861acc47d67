"""`sensevoice` backend: tiny random releases laid out like SenseVoice-Small (config.yaml, model.pt,
am.mvn, the SentencePiece vocabulary with the release's rich tags), loaded through the production
registry and run on real speech; CTC decoding of tags, words and times on a known output; strict
loading refuses what does not fit, naming the keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.backend_checkpoints import assert_result_contract, speech_segments
from tests.funasr_checkpoints import SENSEVOICE_BPE, SENSEVOICE_TAGS, build_sensevoice
from worker.pipeline import labels
from worker.pipeline.voice.funasr import fbank, spm
from worker.pipeline.voice.funasr.release import CheckpointMismatch
from worker.pipeline.voice.funasr.sensevoice import EMOTION_TAGS, SenseVoiceModel, load_model
from worker.pipeline.voice.registry import load_backend


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sensevoice(tmp_path_factory.mktemp("sv") / "SenseVoiceSmall")


@pytest.fixture(scope="module")
def model(release: Path) -> SenseVoiceModel:
    loaded = load_backend("sensevoice", release, "cpu", "auto")
    assert isinstance(loaded, SenseVoiceModel)
    return loaded


def test_emotion_tags_map_onto_canonical_labels() -> None:
    mapped = {t: labels.canonical(raw) for t, raw in EMOTION_TAGS.items()}
    assert mapped == {
        "HAPPY": "happy",
        "SAD": "sad",
        "ANGRY": "angry",
        "NEUTRAL": "neutral",
        "FEARFUL": "fear",
        "DISGUSTED": "disgust",
        "SURPRISED": "surprise",
        "EMO_UNKNOWN": None,
    }


def test_contract_on_real_speech_and_batches_like_alone(model: SenseVoiceModel) -> None:
    segments = speech_segments(4)
    results = model.predict(segments)
    assert model.name == "sensevoice"
    assert model.version.startswith("SenseVoiceSmall@") and len(model.version.split("@")[1]) == 8
    for segment, result in zip(segments, results, strict=True):
        assert_result_contract(segment, result)
        assert result.raw_label in EMOTION_TAGS.values()
        assert result.evidence[0]["cue"] == "classifier" and result.evidence[0]["text"].startswith(
            "SenseVoice"
        )
        assert result.modalities["audio"]["language"] in ("zh", "en", "yue", "ja", "ko", "nospeech")
        alone = model.predict([segment])[0]
        for label in labels.CANONICAL_LABELS:
            assert result.scores[label] == pytest.approx(alone.scores[label], abs=1e-5)
    assert len({round(r.scores["neutral"], 6) for r in results}) > 1


def _logp(model: SenseVoiceModel, frames: list[str | None]) -> torch.Tensor:
    """Log-probabilities that put 0.9 on the named piece of each frame (None = blank)."""
    ids = model.vocab.ids()
    probs = torch.full((len(frames), len(model.vocab)), 0.1 / (len(model.vocab) - 1))
    for i, piece in enumerate(frames):
        probs[i, ids[piece] if piece is not None else 0] = 0.9
    return probs.log()


def test_decoding_reads_tags_words_and_times(model: SenseVoiceModel) -> None:
    frames = [
        "<|en|>",
        "<|ANGRY|>",
        "<|Laughter|>",
        "<|woitn|>",
        None,
        "▁the",
        "▁bill",
        "▁bill",
        None,
        "▁is",
        None,
        None,
        "▁wrong",
        "▁wrong",
        "▁wrong",
        None,
        "你",
        "好",
        None,
    ]
    analysis = model._decode(_logp(model, frames))
    assert analysis.language == "en"
    assert max(analysis.emotions, key=analysis.emotions.__getitem__) == "angry"
    assert max(analysis.events, key=analysis.events.__getitem__) == "Laughter"
    words = model.words(analysis, duration_s=0.9)
    assert [w.text for w in words] == ["the", "bill", "is", "wrong", "你", "好"]
    # One output frame per 60 ms, counted after the four tag frames, centred like the release's.
    assert words[1].start_s == pytest.approx(2 * 0.06 - 0.03) and words[1].end_s == pytest.approx(
        4 * 0.06 - 0.03
    )
    assert words[3].start_s == pytest.approx(8 * 0.06 - 0.03) and words[3].end_s == pytest.approx(
        11 * 0.06 - 0.03
    )
    assert all(0.0 <= w.start_s <= w.end_s <= 0.9 for w in words)
    assert all(w.probability == pytest.approx(0.9) for w in words)


def test_events_become_timed_evidence(model: SenseVoiceModel) -> None:
    segment = speech_segments(1)[0]
    laughing = model._decode(_logp(model, ["<|en|>", "<|HAPPY|>", "<|Laughter|>", "<|woitn|>", None]))
    result = model._result(segment, laughing)
    assert result.label == "happy" and result.modalities["audio"] == {"language": "en", "event": "Laughter"}
    event = next(e for e in result.evidence if e["cue"] == "event")
    assert event["value"] == "laughter" and event["text"].startswith("Laughter heard over 00:00.5")
    assert (event["start_s"], event["end_s"]) == (segment.start_s, segment.end_s)
    assert result.evidence[1] is event and "laughter heard over 00:00.5" in result.reasoning_text.lower()
    speaking = model._decode(_logp(model, ["<|en|>", "<|EMO_UNKNOWN|>", "<|Speech|>", "<|woitn|>", None]))
    plain = model._result(segment, speaking)
    assert not [e for e in plain.evidence if e["cue"] == "event"]
    assert plain.raw_label == "unknown" and plain.confidence < 0.2  # unknown mass stays out of confidence


def test_front_end_is_kaldi_shaped(release: Path) -> None:
    fe = fbank.FrontEnd()
    t = np.arange(16_000) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    feats = fbank.fbank(tone, fe)
    assert feats.shape == (1 + (16_000 - 400) // 160, 80)
    centres = 700 * (
        np.exp(
            (
                1127 * np.log(1 + 20 / 700)
                + (np.arange(80) + 1) * (1127 * np.log(1 + 8000 / 700) - 1127 * np.log(1 + 20 / 700)) / 81
            )
            / 1127
        )
        - 1
    )
    assert abs(centres[int(feats.mean(0).argmax())] - 1000) < 60  # the tone's mel band is the loudest
    assert fbank.stack_lfr(feats, 7, 6).shape == (int(np.ceil(feats.shape[0] / 6)), 560)
    shift, scale = fbank.read_cmvn(release / "am.mvn")
    assert shift.shape == scale.shape == (560,)
    assert fbank.features(tone, fe, (shift, scale)).shape == (17, 560)


def test_vocabulary_file_reads_back(release: Path) -> None:
    vocab = spm.read(release / SENSEVOICE_BPE)
    ids = vocab.ids()
    assert vocab.pieces[0] == "<unk>" and all(t in ids for t in SENSEVOICE_TAGS)
    assert (
        vocab.text([ids["▁thank"], ids["▁you"], ids["▁for"], ids["▁call"], ids["ing"]])
        == "thank you for calling"
    )


def _copy(release: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(release, copy)
    return copy


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.pop("encoder.tp_encoders.1.self_attn.fsmn_block.weight"),
            r"1 weights missing: encoder\.tp_encoders\.1\.self_attn\.fsmn_block\.weight",
        ),
        (lambda s: s.pop("embed.weight"), r"weights missing: embed\.weight"),
        (
            lambda s: s.update({"decoder.embed.0.weight": torch.zeros(2, 2)}),
            r"1 unexpected weights: decoder\.embed\.0\.weight",
        ),
        (
            lambda s: s.update({"ctc.ctc_lo.weight": torch.zeros(25055, 32)}),
            r"1 weights with another shape: ctc\.ctc_lo\.weight \(25055, 32\) ≠ \(50, 32\)",
        ),
    ],
)
def test_strict_loading_names_what_does_not_match(release: Path, tmp_path: Path, edit, message: str) -> None:
    copy = _copy(release, tmp_path)
    state = torch.load(copy / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, copy / "model.pt")
    with pytest.raises(CheckpointMismatch, match=message):
        load_backend("sensevoice", copy, "cpu", "auto")


def test_wrapped_state_dict_and_missing_pieces(release: Path, tmp_path: Path, model: SenseVoiceModel) -> None:
    wrapped = load_model(build_sensevoice(tmp_path / "wrapped", wrap="state_dict"), "cpu")
    segment = speech_segments(1)[0]
    assert wrapped.predict([segment])[0].scores == pytest.approx(model.predict([segment])[0].scores, abs=1e-6)
    no_emotions = build_sensevoice(
        tmp_path / "no-emotions", tags=[t for t in SENSEVOICE_TAGS if "SAD" not in t]
    )
    with pytest.raises(CheckpointMismatch, match=r"lacks the release's tags <\|SAD\|>"):
        load_model(no_emotions, "cpu")
    copy = _copy(release, tmp_path)
    (copy / "am.mvn").unlink()
    with pytest.raises(FileNotFoundError, match=r"CMVN file \(am\.mvn\)"):
        load_backend("sensevoice", copy, "cpu", "auto")
