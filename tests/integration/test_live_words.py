"""Which live segments the infer stage transcribes before inference, and how their words join the
call's transcript: only analyzed segments of live calls on their first analysis, never ones whose
words are already stored (a duplicate message), never over a client's transcript; merged words keep
one utterance per turn. The recogniser itself runs in tests/e2e/test_live_words.py."""

from __future__ import annotations

import uuid

from callpulse.settings import Settings
from db.models import Recording, Segment
from db.queries.corrections import get_transcript, put_transcript
from db.session import transaction
from worker.pipeline.speech.asr import Span
from worker.stages import live_words


def _utterance(channel: int, start_s: float, end_s: float, text: str) -> dict:
    return {"start_s": start_s, "end_s": end_s, "text": text, "speaker": None, "channel": channel,
            "words": [[start_s, end_s, text]]}


def _call(tenant_id: uuid.UUID, container: str = "live",
          status: str = "live") -> tuple[uuid.UUID, list[uuid.UUID]]:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="live call", media_uri="/nonexistent/original.wav",
                        container=container, channels=2, channel_roles={"0": "agent", "1": "customer"},
                        status=status)
        s.add(rec)
        s.flush()
        ids = []
        for index, (channel, start, end, analyzed) in enumerate([(0, 0.5, 4.0, False), (1, 4.6, 9.0, True),
                                                                 (1, 9.8, 14.0, True)]):
            seg = Segment(recording_id=rec.id, index=index, channel=channel, speaker=f"ch{channel}",
                          role="customer" if channel else "agent", start_s=start, end_s=end,
                          analyzed=analyzed, skip_reason=None if analyzed else "policy")
            s.add(seg)
            s.flush()
            ids.append(seg.id)
        return rec.id, ids


SETTINGS = Settings(asr_enabled=True, live_asr_enabled=True)


def test_which_segments_need_words(make_tenant) -> None:
    tenant_id, _ = make_tenant(["customer"])
    rec_id, ids = _call(tenant_id)
    needs = live_words._calls_needing_words(ids, SETTINGS)
    assert [c.recording_id for c in needs] == [rec_id]
    assert needs[0].spans == [Span(1, 4.6, 9.0), Span(1, 9.8, 14.0)]  # the agent's is not analyzed

    # The first turn's words are stored (its last word running into the next turn): only the second
    # turn still needs them.
    with transaction() as s:
        put_transcript(s, rec_id, "asr", [_utterance(1, 4.7, 10.0, "hello there")], source="asr")
    assert live_words._calls_needing_words(ids, SETTINGS)[0].spans == [Span(1, 9.8, 14.0)]

    # An upload, a rescore, or a client's transcript: nothing to transcribe, and no model is loaded.
    upload_id, upload_segments = _call(tenant_id, container="wav", status="analyzing")
    assert live_words._calls_needing_words(upload_segments, SETTINGS) == []
    client_id, client_segments = _call(tenant_id)
    with transaction() as s:
        put_transcript(s, client_id, "json", [_utterance(1, 5.0, 6.0, "theirs")], source="client")
    assert live_words.transcribe_live_segments(client_segments, SETTINGS) == set()
    with transaction() as s:
        row = get_transcript(s, client_id)
        assert row is not None and row.source == "client" and len(row.utterances) == 1
    off = Settings(asr_enabled=True, live_asr_enabled=False)
    assert live_words.transcribe_live_segments(ids, off) == set()
    assert live_words.transcribe_live_segments(ids, Settings(asr_enabled=False)) == set()
    assert upload_id != rec_id


def test_merge_keeps_one_utterance_per_turn(make_tenant) -> None:
    tenant_id, _ = make_tenant(["customer"])
    rec_id, _ = _call(tenant_id)
    live_words._merge(rec_id, [_utterance(1, 4.7, 8.8, "first turn")])
    # A duplicate of the first turn (another task heard it too), the second turn, an agent line.
    live_words._merge(rec_id, [_utterance(1, 4.8, 8.7, "first turn again"),
                               _utterance(1, 9.9, 13.5, "second"), _utterance(0, 0.6, 3.9, "agent")])
    with transaction() as s:
        row = get_transcript(s, rec_id)
        assert row is not None and row.source == "asr"
        assert [u["text"] for u in row.utterances] == ["agent", "first turn", "second"]
