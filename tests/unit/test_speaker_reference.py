"""Per-speaker normalisation in production: a segment is never scored against itself."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import EXAMPLE
from worker.pipeline.media import decode
from worker.pipeline.voice.embedded import classifier, features
from worker.pipeline.voice.embedded.model import load_model

# The example call's customer turns (channel 1) and agent turns (channel 0), in seconds.
SPANS = [(1, 6.0, 11.1), (1, 18.2, 22.8), (1, 30.2, 34.7), (0, 0.4, 5.4)]


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    audio = decode.decode(EXAMPLE, 16000)
    return [audio.samples[c, int(a * 16000): int(b * 16000)] for c, a, b in SPANS]


def test_leave_out_equals_the_reference_of_the_other_clips(clips) -> None:
    model = load_model()
    x = features.extract_batch(clips[:3], 16000)
    with_all = model.speaker_reference(clips[:3], 16000)
    others = model.speaker_reference(clips[1:3], 16000)
    loo = classifier.leave_out(with_all, x[0])
    assert loo is not None and loo["n"] == 2
    # Equal up to the 5 significant digits the stored summary keeps.
    np.testing.assert_allclose(loo["mean"], others["mean"], rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(loo["std"], others["std"], rtol=1e-3, atol=1e-2)


def test_a_segment_is_scored_against_the_others_only(clips) -> None:
    model = load_model()
    x = features.extract_batch(clips, 16000)
    plain = model.probabilities(x[:1], [None])
    # A speaker with one segment: normalised against itself it would be all zeros (the same answer
    # for every such segment); it falls back to the plain head instead.
    alone = model.speaker_reference(clips[:1], 16000)
    assert np.allclose(model.probabilities(x[:1], [{**alone, "includes_segment": True}]), plain)
    # Three segments: each scored against the two others, which differs from scoring it against a
    # summary that contains it.
    three = model.speaker_reference(clips[:3], 16000)
    loo = model.probabilities(x[:3], [{**three, "includes_segment": True}] * 3)
    naive = model.probabilities(x[:3], [three] * 3)
    assert not np.allclose(loo, naive)
    # A segment outside the summary (the agent's turn here, any segment past the 12 sampled ones)
    # uses it whole.
    outside = model.probabilities(x[3:], [three])
    assert np.allclose(outside, model.probabilities(x[3:], [{**three, "includes_segment": False}]))


def test_a_role_shared_by_two_channels_keeps_two_speakers() -> None:
    from callpulse.settings import get_settings
    from worker import runtime
    from worker.pipeline.speech import vad as segment
    from worker.stages.ingest import segmentation_config

    audio = decode.decode(EXAMPLE, 16000)
    config = segmentation_config(get_settings())
    shared = segment.run(runtime.vad_model(), audio, {0: "customer", 1: "customer"}, config)
    assert {(s.channel, s.speaker) for s in shared} == {(0, "customer_0"), (1, "customer_1")}
    distinct = segment.run(runtime.vad_model(), audio, {0: "agent", 1: "customer"}, config)
    assert {(s.channel, s.speaker) for s in distinct} == {(0, "agent"), (1, "customer")}
    unknown = segment.run(runtime.vad_model(), audio, {}, config)
    assert {s.speaker for s in unknown} == {"speaker_0", "speaker_1"}
