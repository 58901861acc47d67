"""The embedded mode's loop (worker/jobs/inline.py): follow-ups run first in, first out until none
remain, with `callpulse analyze`'s progress text ("transcribing", "segments done/total"). The stage
bodies are replaced by ones returning fixed follow-ups, so the loop itself is what is tested; the
real stages run through it in tests/integration/test_cli.py."""

from __future__ import annotations

import uuid

import pytest

from callpulse.settings import Settings
from worker.jobs import inline, names
from worker.stages.lifecycle import Followups


def test_follow_ups_run_in_order_until_none_remain(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = uuid.uuid4()
    segs = [uuid.uuid4() for _ in range(3)]
    ran: list[tuple[str, list]] = []

    def stage(name: str, result: Followups):
        def run(self: inline.InlineRunner, *args: object) -> Followups:
            ran.append((name, list(args)))
            return result
        return run

    monkeypatch.setitem(inline.RUNNERS, names.INGEST.name, stage("ingest", Followups(transcribe=[rec])))
    monkeypatch.setitem(inline.RUNNERS, names.TRANSCRIBE.name, stage(
        "transcribe", Followups(infer_batches=[segs[:2], segs[2:]])))
    # The real infer runner, so its progress text is the one checked; its stage body is replaced.
    monkeypatch.setattr("worker.stages.infer.infer", lambda ids, settings, model: Followups(completed=[rec]))
    status: list[str] = []
    inline.run_inline(Followups(ingest=[rec]), Settings(), None, on_status=status.append)

    assert ran == [("ingest", [str(rec)]), ("transcribe", [str(rec)])]
    # Both batches counted before the first runs; the final rule pass is run (a no-op) and ends it.
    assert status == ["segments 0/3", "segments 2/3"]
