"""`callpulse adapt` on a LABELS.csv and `callpulse train --tenant` on stored corrections (real
Postgres): both write a model directory the embedded backend loads, with its own version.

The audio is synthetic (two "callers" whose angry and neutral turns differ in pitch and level), so
these tests exercise the code paths and the refusals, not the accuracy (docs/MODELS.md has that).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callpulse import cli
from db.models import Recording, Segment, Tenant
from db.session import transaction
from tests.funasr_checkpoints import build_emotion2vec
from tests.rules_fixtures import allow_loopback_targets, auth, client  # noqa: F401
from training import adapt_data
from worker.pipeline.voice.embedded import classifier
from worker.pipeline.voice.embedded.model import load_model
from worker.pipeline.voice.registry import load_backend

RATE = 16_000
TURN_S = 2.0


def _turn(angry: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(TURN_S * RATE)) / RATE
    f0 = (240.0 if angry else 120.0) * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    level = 0.35 if angry else 0.08
    return (level * voice * (0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t) ** 2)
            + rng.normal(0, 0.01, t.size)).astype(np.float32)


def _call(path: Path, labels: list[str], seed: int) -> list[tuple[float, float, str]]:
    """One caller's turns back to back; returns (start_s, end_s, label) per turn."""
    audio = np.concatenate([_turn(lab == "angry", seed + i) for i, lab in enumerate(labels)])
    soundfile.write(path, audio, RATE)
    return [(i * TURN_S, (i + 1) * TURN_S, lab) for i, lab in enumerate(labels)]


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "start_s", "end_s"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two calls (spans labelled angry/neutral, some as synonyms) and two whole-file clips."""
    root = tmp_path_factory.mktemp("labels")
    (root / "calls").mkdir()
    rows: list[dict[str, object]] = []
    for n, seed in ((1, 10), (2, 50)):
        pattern = ["angry", "neutral"] * 4
        for start, end, lab in _call(root / "calls" / f"call{n}.wav", pattern, seed):
            rows.append({"file": f"calls/call{n}.wav", "label": "anger" if lab == "angry" and n == 2 else lab,
                         "start_s": start, "end_s": end})
    for n in range(2):
        soundfile.write(root / f"clip{n}.wav", _turn(True, 90 + n), RATE)
        rows.append({"file": f"clip{n}.wav", "label": "angry", "start_s": "", "end_s": ""})
    _write_csv(root / "labels.csv", rows)
    return root


def test_adapt_writes_a_loadable_model_with_its_own_version(labelled: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adapted"
    assert cli.main(["adapt", "--labels", str(labelled / "labels.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out estimate" in printed and "base    ser-v2+" in printed and "adapted: UAR" in printed
    meta = json.loads((out / classifier.METADATA_FILE).read_text())
    shipped = load_model()
    assert meta["adaptation"]["labels"] == {"angry": 10, "neutral": 8}
    assert meta["adaptation"]["base_version"] == shipped.version
    assert meta["adaptation"]["held_out"]["split"] == "grouped"  # by file: the two calls, two clips
    model = load_backend("embedded", out, "cpu", "float32")
    assert model.version == meta["version"] and model.version.startswith("ser-v2-adapted+")
    assert model.version != shipped.version
    # The residual head moves the answer towards the labels on the labelled audio itself.
    x = adapt_data.extract([adapt_data.LabeledSpan(labelled / "clip0.wav", "angry")], log=lambda _: None)[0]
    angry = model.classes.index("angry")  # type: ignore[attr-defined]
    zeros = np.zeros_like(x)
    before = shipped.model.combined(x, zeros, zeros, np.zeros(1))[0, angry]
    after = model.model.combined(x, zeros, zeros, np.zeros(1))[0, angry]  # type: ignore[attr-defined]
    assert after > before
    # Adapting the adapted model replaces its residual head rather than stacking a second one.
    again = tmp_path / "again"
    assert cli.main(["adapt", "--labels", str(labelled / "labels.csv"), "--out", str(again),
                     "--base", str(out)]) == 0
    again_meta = json.loads((again / classifier.METADATA_FILE).read_text())
    assert again_meta["adaptation"]["base_version"] == shipped.version


def test_unknown_labels_are_refused_with_their_lines(labelled: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write_csv(labelled / "bad.csv", [
        {"file": "clip0.wav", "label": "angry"}, {"file": "clip1.wav", "label": "hangry"},
        {"file": "clip1.wav", "label": "contempt"}])
    assert cli.main(["adapt", "--labels", str(bad), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:3 'hangry'" in err and "bad.csv:4 'contempt'" in err and "Known labels" in err
    assert not (tmp_path / "m").exists()
    no_header = labelled / "noheader.csv"
    no_header.write_text("clip0.wav,angry\n")
    assert cli.main(["adapt", "--labels", str(no_header), "--out", str(tmp_path / "m")]) == 2
    assert "file,label" in capsys.readouterr().err


def test_spans_past_the_end_are_refused(labelled: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    past = _write_csv(labelled / "past.csv", [
        {"file": "calls/call1.wav", "label": "angry", "start_s": 0, "end_s": 2},
        {"file": "calls/call1.wav", "label": "angry", "start_s": 15, "end_s": 19.5}])
    assert cli.main(["adapt", "--labels", str(past), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "past.csv:3" in err and "past the end of call1.wav (16.00 s long)" in err
    missing = _write_csv(labelled / "missing.csv", [{"file": "nope.wav", "label": "sad"}])
    assert cli.main(["adapt", "--labels", str(missing), "--out", str(tmp_path / "m")]) == 2
    assert "no such file 'nope.wav'" in capsys.readouterr().err


def test_too_few_labels_warn_and_keep_the_prior(labelled: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader((labelled / "labels.csv").open()))
    rows[0]["label"], rows[2]["label"] = "sad", "sad"  # two sad turns only
    few = _write_csv(labelled / "few.csv", rows)
    out = tmp_path / "few"
    assert cli.main(["adapt", "--labels", str(few), "--out", str(out)]) == 0
    assert "only 2 label(s) of 'sad'" in capsys.readouterr().err
    model = load_model(weights_path=out).model
    assert model.residual is not None
    sad, angry = model.classes.index("sad"), model.classes.index("angry")
    assert not model.residual.weights[:, sad].any() and model.residual.bias[sad] == 0.0
    assert model.residual.weights[:, angry].any()
    # Nothing with enough examples: nothing to adapt, refused.
    tiny = _write_csv(labelled / "tiny.csv", rows[:3])
    assert cli.main(["adapt", "--labels", str(tiny), "--out", str(tmp_path / "tiny")]) == 2
    assert "nothing to adapt" in capsys.readouterr().err


def test_train_tenant_adapts_on_stored_corrections(client, make_tenant, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    tenant_id, key = make_tenant(["customer"])
    _, other_key = make_tenant(["customer"])
    turns = _call(tmp_path / "call.wav", ["angry", "neutral"] * 5, 7)
    segment_ids = []
    with transaction() as s:
        for n, media in enumerate((tmp_path / "call.wav", Path("/nonexistent/deleted.wav"))):
            rec = Recording(tenant_id=tenant_id, filename="call.wav", media_uri=str(media), status="done",
                            external_id=f"adapt-{n}-{tenant_id.hex[:6]}", duration_s=20.0)
            s.add(rec)
            s.flush()
            for i, (start, end, _) in enumerate(turns if n == 0 else turns[:2]):
                seg = Segment(recording_id=rec.id, index=i, channel=0, speaker="customer", role="customer",
                              start_s=start, end_s=end, analyzed=True)
                s.add(seg)
                s.flush()
                segment_ids.append((seg.id, turns[i][2]))
        name = s.get(Tenant, tenant_id).name  # type: ignore[union-attr]
    for seg_id, lab in segment_ids:
        put = client.put(f"/v1/segments/{seg_id}/label", headers=auth(key), json={"label": lab})
        assert put.status_code == 200
    # Another tenant's key cannot label them, so they never enter its model or this one twice.
    assert client.put(f"/v1/segments/{segment_ids[0][0]}/label", headers=auth(other_key),
                      json={"label": "sad"}).status_code == 404

    out = tmp_path / "tenant-model"
    assert cli.main(["train", "--tenant", name, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "12 corrections of tenant" in captured.err and "2 span(s) skipped" in captured.err
    meta = json.loads((out / classifier.METADATA_FILE).read_text())
    assert meta["adaptation"]["source"] == f"tenant:{name}"
    assert meta["adaptation"]["labels"] == {"neutral": 5, "angry": 5}
    # One call, one speaker: the estimate says its folds could not be grouped.
    assert meta["adaptation"]["held_out"]["split"].startswith("not grouped")
    assert load_model(weights_path=out).version == meta["version"]
    # With an emotion2vec release as --base, the same corrections adapt its head (encoder frozen).
    e2v_out = tmp_path / "tenant-e2v"
    assert cli.main(["train", "--tenant", name, "--out", str(e2v_out),
                     "--base", str(build_emotion2vec(tmp_path / "emotion2vec_plus_tiny"))]) == 0
    e2v_report = json.loads((e2v_out / "adaptation.json").read_text())
    assert e2v_report["source"] == f"tenant:{name}" and e2v_report["encoder"] == "frozen"
    assert e2v_report["labels"] == {"neutral": 5, "angry": 5}
    assert load_backend("emotion2vec", e2v_out, "cpu", "auto").version.startswith("tenant-e2v@")
    # The corpora options belong to --ship-only.
    assert cli.main(["train", "--tenant", name, "--out", str(out), "--ravdess", "x"]) == 2
    with pytest.raises(SystemExit, match="no tenant named 'no-such-tenant'"):
        cli.main(["train", "--tenant", "no-such-tenant", "--out", str(out)])
