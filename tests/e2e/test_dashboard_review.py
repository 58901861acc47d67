"""The review page in a real browser (Chromium through Playwright, a real `callpulse api`): the
queue's picks with their reasons, a player that plays just the segment, a one-click correction that
stores the same row as PUT /v1/segments/{id}/label and takes the item out of the list, and a
read-only session that sees the queue without buttons. Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
import uuid
import wave
from pathlib import Path

import numpy as np
from sqlalchemy import select

from db.models import Prediction, Recording, Segment, SegmentLabel
from db.queries.tenants import create_api_key
from db.session import transaction
from tests import browser_fixtures as bf
from tests.browser_fixtures import browser, server  # noqa: F401 (fixtures)

expect = bf.sync_api.expect


def _wav(path: Path, seconds: float = 10.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


Spans = list[tuple[float, float, str, float]]  # (start_s, end_s, label, confidence)


def _call(tenant_id: uuid.UUID, media: Path, segments: Spans) -> list[uuid.UUID]:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media), status="done",
                        external_id=f"review-{uuid.uuid4().hex[:6]}", duration_s=10.0)
        s.add(rec)
        s.flush()
        ids = []
        for i, (start, end, label, confidence) in enumerate(segments):
            seg = Segment(recording_id=rec.id, index=i, channel=0, speaker="customer", role="customer",
                          start_s=start, end_s=end)
            s.add(seg)
            s.flush()
            s.add(Prediction(segment_id=seg.id, model_name="embedded", model_version="1", label=label,
                             raw_label=label, scores={label: confidence}, confidence=confidence,
                             reasoning=[], reasoning_text=""))
            ids.append(seg.id)
        return ids


def _player_state(page, item) -> tuple[float, bool]:
    state = item.locator("audio").evaluate("(a) => [a.currentTime, a.paused]")
    return float(state[0]), bool(state[1])


def test_review_plays_the_segment_and_labels_it_in_one_click(server: str, browser, make_tenant,
                                                              tmp_path: Path) -> None:
    tenant_id, key = make_tenant(["customer"])
    with transaction() as s:
        read_key = create_api_key(s, tenant_id, "wallboard", scope="read")[1]
    media = _wav(tmp_path / "review-call.wav")
    sure, unsure, middling = _call(tenant_id, media, [(0.5, 2.0, "neutral", 0.95), (3.0, 4.5, "angry", 0.3),
                                                      (6.0, 8.0, "sad", 0.55)])
    other_tenant, _ = make_tenant(["customer"])
    foreign = _call(other_tenant, media, [(0.0, 1.0, "fear", 0.1)])[0]

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, key, "/dashboard/review")
    expect(page.get_by_role("link", name="Review", exact=True)).to_have_attribute("aria-current", "page")
    items = page.locator("[data-review-item]")
    expect(items).to_have_count(3)
    expect(page.locator(f"[data-review-item='{foreign}']")).to_have_count(0)
    first = items.first
    assert first.get_attribute("data-review-item") == str(unsure)
    expect(first.locator("[data-cell='why']")).to_contain_text("the model was unsure (confidence 0.30)")
    expect(first.locator("[data-cell='label']")).to_have_text("angry")

    # The player plays the segment's span only: it starts at 3.0 s and stops itself at 4.5 s.
    first.locator("audio").evaluate("(a) => a.play()")
    deadline, started, at, paused = time.monotonic() + 15, None, 0.0, False
    while time.monotonic() < deadline:
        at, paused = _player_state(page, first)
        if started is None and at > 0:
            started = at
        if started is not None and paused:
            break
        time.sleep(0.05)
    assert started is not None and 3.0 - bf.SEEK_TOLERANCE_S <= started <= 3.0 + 1.0, started
    assert paused and abs(at - 4.5) <= bf.SEEK_TOLERANCE_S, (at, paused)
    bf.shoot(page, "review")

    # One click stores the correction through the API's handler; the item leaves the list.
    first.get_by_role("button", name="sad", exact=True).click()
    done = page.locator(f"[data-reviewed='{unsure}']")
    expect(done).to_contain_text("is sad")
    expect(done).to_contain_text("the model said angry")
    expect(page.locator(f"[data-review-item='{unsure}']")).to_have_count(0)
    with transaction() as s:
        row = s.scalar(select(SegmentLabel).where(SegmentLabel.segment_id == unsure))
        assert row is not None and row.label == "sad" and row.model_label == "angry"
        assert row.labeled_by.startswith("test (")
    # It never comes back; confirming the model's own label is a correction too.
    page.reload()
    expect(items).to_have_count(2)
    assert items.first.get_attribute("data-review-item") == str(middling)
    items.first.get_by_role("button", name="sad", exact=True).click()
    expect(page.locator(f"[data-reviewed='{middling}']")).to_contain_text("is sad")
    page.reload()
    expect(items).to_have_count(1)
    assert items.first.get_attribute("data-review-item") == str(sure)
    context.close()

    # A read-only session sees the queue and its players, and no buttons.
    viewer = browser.new_context(viewport={"width": 1280, "height": 800})
    page = viewer.new_page()
    bf.login(page, server, read_key, "/dashboard/review")
    expect(page.locator("[data-review-item]")).to_have_count(1)
    expect(page.locator("[data-review-item] audio")).to_have_count(1)
    expect(page.locator("main form[method='post']")).to_have_count(0)
    viewer.close()
