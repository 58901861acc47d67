"""Uploaded transcripts: every accepted format, every refusal with its reason, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import random
import time

import pytest

from worker.pipeline.contracts import Word
from worker.pipeline.text.transcript import (
    MAX_INPUT_BYTES,
    MAX_TEXT_CHARS,
    MAX_UTTERANCES,
    TranscriptError,
    Utterance,
    detect_format,
    from_rows,
    on_channel,
    parse_transcript,
    parse_with_format,
    to_rows,
    words_in,
)

CALLPULSE_JSON = json.dumps({"utterances": [
    {"start": 0.42, "end": 3.1, "text": "Thank you for calling Northwind, this is Dana.", "speaker": "agent",
     "channel": 0, "words": [{"start": 0.42, "end": 0.61, "word": "Thank"}, {"start": 0.61, "end": 0.75,
                              "word": "you"}, {"start": 0.75, "end": 0.9, "text": "for"}]},
    {"start": "00:02.800", "end": "00:00:07.250", "text": "Hi, my internet has been down since Monday.",
     "speaker": "customer", "channel": 1},
    {"start": 7.6, "end": 9.0, "text": "I'm sorry to hear that.", "speaker": "agent", "channel": 0},
]}).encode()

WORDS_JSON = json.dumps({"words": [
    {"start": 0.0, "end": 0.3, "word": "Hello", "speaker": "spk_0"},
    {"start": 0.35, "end": 0.6, "word": "there", "speaker": "spk_0"},
    {"start": 0.7, "end": 1.0, "word": "Hi", "speaker": "spk_1"},
    {"start": 1.1, "end": 1.4, "word": "how", "speaker": "spk_0"},
    {"start": 3.0, "end": 3.3, "word": "Sorry?", "speaker": "spk_0"},  # 1.6 s pause: new utterance
]}).encode()

WHISPER_JSON = json.dumps({"text": " Good morning. Account number is 42.", "language": "en", "segments": [
    {"id": 0, "seek": 0, "start": 0.0, "end": 1.2, "text": " Good morning.", "speaker": "SPEAKER_00",
     "words": [{"word": " Good", "start": 0.0, "end": 0.5, "probability": 0.98},
               {"word": " morning.", "start": 0.5, "end": 1.2, "probability": 0.97}]},
    # WhisperX leaves numbers it could not align without times
    {"start": 1.5, "end": 3.0, "text": " Account number is 42.", "speaker": "SPEAKER_01",
     "words": [{"word": "Account", "start": 1.5, "end": 1.9}, {"word": "number", "start": 1.9, "end": 2.3},
               {"word": "is", "start": 2.3, "end": 2.4}, {"word": "42."}]},
    {"start": 3.0, "end": 3.0, "text": ""},  # empty segments happen and are dropped
]}).encode()

DEEPGRAM_JSON = json.dumps({"metadata": {"channels": 2}, "results": {"utterances": [
    {"start": 0.5, "end": 1.5, "channel": 1, "speaker": 0, "transcript": "yes please",
     "words": [{"word": "yes", "punctuated_word": "Yes", "start": 0.5, "end": 0.9},
               {"word": "please", "punctuated_word": "please.", "start": 0.9, "end": 1.5}]}]}}).encode()

WEBVTT = """\ufeffWEBVTT - call 8812
Kind: captions

STYLE
::cue(v[voice="Agent"]) { color: yellow }

REGION
id:fred width:40%

NOTE exported by the contact center's ASR
two lines of note

intro
00:00:00.500 --> 00:00:03.000 align:start position:10%
<v Agent>Thanks for calling, <00:00:01.200><c.highlight>how</c> <00:00:01.500>can I help?</v>

00:03.100 --> 00:06.000
<v.loud Customer Jane>My <b>bill</b> is wrong &amp; I&#39;m
<i>really</i> annoyed.</v>

3
00:00:05.500 --> 00:00:07.000 line:0
Agent: I can fix that &lt;today&gt;.

00:00:07.000 --> 00:00:08.000
<v Agent>Okay?</v><v Customer Jane>Okay.</v>
"""

SRT = """1
00:00:01,000 --> 00:00:02,500
Agent: Hello, <i>how</i> can I help?

2
00:00:02,600 --> 00:00:04,000
Customer: My order never arrived.
"""


def reason(data: bytes | str, **kw: object) -> str:
    with pytest.raises(TranscriptError) as err:
        parse_transcript(data.encode() if isinstance(data, str) else data, **kw)  # type: ignore[arg-type]
    assert str(err.value) == err.value.reason
    return err.value.reason


def test_callpulse_utterances_json() -> None:
    us = parse_transcript(CALLPULSE_JSON, duration_s=9.2, channels=2)
    assert [(u.start_s, u.end_s, u.speaker, u.channel) for u in us] == [
        (0.42, 3.1, "agent", 0), (2.8, 7.25, "customer", 1), (7.6, 9.0, "agent", 0)]
    assert us[0].words[:2] == (Word(0.42, 0.61, "Thank"), Word(0.61, 0.75, "you"))
    assert us[0].words[2].text == "for" and us[1].words == ()


def test_bare_list_is_sorted_and_speakers_kept_as_given() -> None:
    data = json.dumps([{"start": 5, "end": 6, "text": "later", "speaker": "Agent 1"},
                       {"start": 1, "end": 2, "text": "first", "speaker": "spk_0"}]).encode()
    us = parse_transcript(data)
    assert [(u.text, u.speaker) for u in us] == [("first", "spk_0"), ("later", "Agent 1")]


def test_word_list_is_grouped_by_speaker_and_pauses() -> None:
    us = parse_transcript(WORDS_JSON)
    assert [(u.text, u.speaker, u.start_s, u.end_s) for u in us] == [
        ("Hello there", "spk_0", 0.0, 0.6), ("Hi", "spk_1", 0.7, 1.0), ("how", "spk_0", 1.1, 1.4),
        ("Sorry?", "spk_0", 3.0, 3.3)]
    assert us[0].words == (Word(0.0, 0.3, "Hello"), Word(0.35, 0.6, "there"))


def test_whisper_segments_and_unaligned_words() -> None:
    us = parse_transcript(WHISPER_JSON, filename="call.json")
    assert [u.text for u in us] == ["Good morning.", "Account number is 42."]
    assert us[0].words == (Word(0.0, 0.5, "Good"), Word(0.5, 1.2, "morning."))
    assert us[1].words == ()  # one word had no times: the utterance's words get spread instead
    assert [w.text for w in words_in(us, 1.5, 3.0)] == ["Account", "number", "is", "42."]


def test_deepgram_utterances() -> None:
    (u,) = parse_transcript(DEEPGRAM_JSON, channels=2)
    assert (u.text, u.speaker, u.channel) == ("yes please", "0", 1)
    assert [w.text for w in u.words] == ["Yes", "please."]


def test_webvtt_voices_inline_timestamps_tags_and_entities() -> None:
    us = parse_transcript(WEBVTT.encode(), duration_s=8.0)
    assert [(u.start_s, u.end_s, u.speaker) for u in us] == [
        (0.5, 3.0, "Agent"), (3.1, 6.0, "Customer Jane"), (5.5, 7.0, "Agent"), (7.0, 8.0, "Agent"),
        (7.0, 8.0, "Customer Jane")]
    assert us[0].text == "Thanks for calling, how can I help?"
    assert us[0].words == (Word(0.5, 1.2, "Thanks for calling,"), Word(1.2, 1.5, "how"),
                           Word(1.5, 3.0, "can I help?"))
    assert us[1].text == "My bill is wrong & I'm really annoyed." and us[1].words == ()
    assert us[2].text == "I can fix that <today>."  # "Agent: " prefix became the speaker
    assert (us[3].text, us[4].text) == ("Okay?", "Okay.")


def test_webvtt_in_utf16_with_bom_either_byte_order() -> None:
    expected = parse_transcript(WEBVTT.encode())
    for enc in ("utf-16", "utf-16-be", "utf-16-le"):
        data = WEBVTT.lstrip("\ufeff").encode(enc)
        if enc != "utf-16":
            data = "\ufeff".encode(enc) + data
        assert parse_transcript(data) == expected


def test_srt_and_detection_fallbacks() -> None:
    us = parse_transcript(SRT.encode())
    assert [(u.start_s, u.end_s, u.speaker, u.text) for u in us] == [
        (1.0, 2.5, "Agent", "Hello, how can I help?"), (2.6, 4.0, "Customer", "My order never arrived.")]
    headless = "00:01.000 --> 00:02.000\nhello\n"
    assert detect_format(headless) is None
    assert detect_format(headless, filename="CALL.VTT") == "webvtt"
    assert detect_format(headless, content_type="text/vtt; charset=utf-8") == "webvtt"
    assert parse_transcript(headless.encode(), content_type="text/vtt")[0].text == "hello"
    assert detect_format(WEBVTT, filename="x.json") == "webvtt"  # the content wins over the name


def test_format_rows_round_trip_and_channel_placement() -> None:
    assert [parse_with_format(d)[0] for d in (CALLPULSE_JSON, WEBVTT.encode(), SRT.encode())] == [
        "json", "webvtt", "srt"]
    us = parse_transcript(CALLPULSE_JSON) + parse_transcript(WEBVTT.encode())
    rows = to_rows(us)
    assert rows[0]["words"][0] == [0.42, 0.61, "Thank"] and set(rows[0]) == {
        "start_s", "end_s", "text", "speaker", "channel", "words"}
    assert from_rows(json.loads(json.dumps(rows))) == us  # survives the JSON column
    agent = parse_transcript(WEBVTT.encode())[0]
    assert on_channel(agent, 0).channel == 0 and on_channel(agent, None) is agent
    assert on_channel(us[1], 0).channel == 1  # a channel the file gave is kept


def test_vtt_edge_cases() -> None:
    vtt = ("WEBVTT\n\n00:01.000 --> 00:02.000\nWell then the price is: too high\n\n"
           "00:03.000 --> 00:04.000\none <00:00:04.030>two\n")  # 30 ms past the cue: rounding
    first, second = parse_transcript(vtt.encode())
    assert first.speaker is None and first.text == "Well then the price is: too high"  # 5 words: no name
    assert second.words == (Word(3.0, 4.03, "one"), Word(4.03, 4.03, "two"))


def test_timestamps_hours_and_mm_ss() -> None:
    vtt = "WEBVTT\n\n01:02:03.500 --> 01:02:04.000\nlate\n\n59:00.000 --> 59:01.250\nearly\n"
    us = parse_transcript(vtt.encode())
    assert [(u.start_s, u.end_s) for u in us] == [(3540.0, 3541.25), (3723.5, 3724.0)]


CASES = [
    (b"abc\xffdef", {}, "the transcript is not valid UTF-8 text (byte 0xff at offset 3)"),
    (b"\xff\xfe\x00\xd8", {}, "the transcript is not valid UTF-16 text (byte 0x00 at offset 2)"),
    (b"  \n", {}, "the transcript is empty"),
    (b"Agent said hello", {}, "not a transcript: expected JSON ("),
    (b'{"utterances": [', {}, "the transcript is not valid JSON (Expecting value at line 1 column 17)"),
    (b"[" * 50000, {}, "the transcript is not valid JSON (nested too deeply)"),
    (b'{"speakers": []}', {}, 'not a transcript: the JSON has none of "utterances", "segments" or "words"'),
    (b'{"utterances": []}', {}, 'the transcript has no utterances ("utterances" is empty)'),
    (b'{"utterances": "hi"}', {}, 'not a transcript: "utterances" must be a list, not a string'),
    (b'[{"start": 0, "end": 1, "text": ""}]', {}, "the transcript has no utterance with text"),
    (b'[{"start": 1, "end": 2, "text": "a"}, 7]', {}, "utterance 2 is not a JSON object"),
    (b'[{"end": 1, "text": "a"}]', {}, "utterance 1 has no start time"),
    (b'[{"start": 0, "text": "a"}]', {}, "utterance 1 has no end time"),
    (b'[{"start": "soon", "end": 1, "text": "a"}]', {},
     "utterance 1: start time 'soon' is neither seconds nor hh:mm:ss.mmm"),
    (b'[{"start": "00:61.0", "end": 1, "text": "a"}]', {}, "utterance 1: start time '00:61.0' is neither"),
    (b'[{"start": [1], "end": 1, "text": "a"}]', {},
     "utterance 1: start time must be a number of seconds, not a list"),
    (b'[{"start": true, "end": 1, "text": "a"}]', {}, "utterance 1: start time must be a number of seconds, "
                                                     "not true/false"),
    (b'[{"start": NaN, "end": 1, "text": "a"}]', {}, "utterance 1: start time is not finite (nan)"),
    (b'[{"start": 0, "end": Infinity, "text": "a"}]', {}, "utterance 1: end time is not finite"),
    (b'[{"start": 0, "end": 1e999, "text": "a"}]', {}, "utterance 1: end time is not finite"),
    (b'[{"start": -0.5, "end": 1, "text": "a"}]', {}, "utterance 1: start time is negative (-0.5)"),
    (b'[{"start": 0, "end": 1, "text": "a"}, {"start": 12.5, "end": 11, "text": "b"}]', {},
     "utterance 2 (00:12.5–00:11.0) ends before it starts"),
    (b'[{"start": 1, "end": 2, "text": 5}]', {}, "utterance 1: text must be a string, not a number"),
    (b'[{"start": 1, "end": 2, "text": "a", "speaker": {"id": 1}}]', {},
     "utterance 1: speaker must be a string, not an object"),
    (b'[{"start": 1, "end": 2, "text": "a", "channel": "left"}]', {},
     "utterance 1: channel must be a whole number, not a string"),
    (b'[{"start": 1, "end": 2, "text": "a", "channel": 2}]', {"channels": 2},
     "utterance 1: channel 2 does not exist; the recording has 2 channels (0–1)"),
    (b'[{"start": 1, "end": 2, "text": "a", "channel": -1}]', {}, "utterance 1: channel -1 does not exist"),
    (b'[{"start": 1, "end": 2, "text": "a", "words": [{"start": 1.0, "end": 2.2, "word": "a"}]}]', {},
     "utterance 1 (00:01.0–00:02.0): word 1 'a' (00:01.0–00:02.2) lies outside the utterance"),
    (b'[{"start": 1, "end": 2, "text": "a", "words": [{"start": 1.5, "end": 1.2, "word": "a"}]}]', {},
     "utterance 1, word 1 'a' (00:01.5–00:01.2) ends before it starts"),
    (b'[{"start": 1, "end": 2, "text": "a", "words": [{"start": 1, "end": 2, "word": null}]}]', {},
     "utterance 1, word 1: the word must be a string, not null"),
    (b'[{"start": 1, "end": 2, "text": "a", "words": "a"}]', {},
     "utterance 1: words must be a list, not a string"),
    (b'[{"start": 0, "end": 42.0, "text": "a", "speaker": "x"}, {"start": 41.2, "end": 43, "text": "b", '
     b'"speaker": "x"}]', {}, "utterance 2 overlaps utterance 1 of the same speaker 'x' (starts at 00:41.2, "
                             "before 00:42.0)"),
    (b'[{"start": 0, "end": 5, "text": "a", "channel": 1}, {"start": 1, "end": 2, "text": "b", '
     b'"channel": 1}]', {}, "utterance 2 overlaps utterance 1 of the same channel 1"),
    (b'[{"start": 1e308, "end": 0, "text": "a"}]', {}, "utterance 1 (27777777777"),
    (b'[{"start": 60, "end": 75.0, "text": "a"}]', {"duration_s": 62.34},
     "utterance 1 ends at 01:15.0, after the end of the recording (62.3 s)"),
    (b'{"words": [{"start": 0, "end": 1, "word": "a"}, {"start": 1, "word": "b"}]}', {},
     "word 2 has no end time"),
    (b'[{"start": 0, "end": 1, "text": "a", "speaker": "' + b"x" * 65 + b'"}]', {},
     "utterance 1: speaker name is longer than 64 characters"),
    (b"WEBVTT\n\n00:01.000 --> soon\nhello\n", {}, "cue 1 (line 3): bad timing line '00:01.000 --> soon'"),
    (b"WEBVTT\n\nNOTE x\n\n00:01.000 --> 00:02.000\nhi\n\n00:03.000 --> 00:02.000\nho\n", {},
     "cue 2 (line 8) (00:03.0–00:02.0) ends before it starts"),
    (b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi <00:00:03.000>there\n", {},
     "cue 1 (line 3) (00:01.0–00:02.0): inline timestamp <00:00:03.000> lies after the cue's end"),
    (b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi <00:00:01.500>the<00:00:01.200>re\n", {},
     "cue 1 (line 3) (00:01.0–00:02.0): inline timestamp <00:00:01.200> lies before an earlier one"),
    (b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi <00:00:99.000>there\n", {},
     "cue 1 (line 3): bad inline timestamp <00:00:99.000>"),
    (b"WEBVTT\n\n00:01.000 --> 00:02.000\n<v A>hi\n\n00:01.500 --> 00:03.000\n<v A>again\n", {},
     "cue 2 (line 6) overlaps cue 1 (line 3) of the same speaker 'A'"),
    (b"WEBVTT\n\nNOTE nothing but a note\n", {}, "the transcript has no utterance with text"),
]


@pytest.mark.parametrize(("data", "kw", "expected"), CASES, ids=[c[2][:50] for c in CASES])
def test_refusals_name_the_problem_and_where(data: bytes, kw: dict[str, object], expected: str) -> None:
    assert reason(data, **kw).startswith(expected)


def test_tolerances_accept_small_disagreements() -> None:
    data = json.dumps([
        {"start": 0, "end": 2.0, "text": "a b", "speaker": "x",
         "words": [{"start": 0, "end": 1, "word": "a"}, {"start": 1, "end": 2.04, "word": "b"}]},
        {"start": 1.96, "end": 3, "text": "c", "speaker": "x"},  # 0.04 s overlap: rounding, not an error
        {"start": 1.0, "end": 3.4, "text": "d", "speaker": "y"},  # another speaker may talk over x
        {"start": 0.5, "end": 1.5, "text": "e"}, {"start": 0.6, "end": 1.4, "text": "f"}]).encode()
    assert len(parse_transcript(data, duration_s=3.0)) == 5  # 3.4 ends within 0.5 s of the end
    assert "after the end of the recording (2.8 s)" in reason(data, duration_s=2.8)


def test_limits() -> None:
    one = b'{"start": 0, "end": 1, "text": "a", "channel": 0},'
    many = b"[" + b'{"start": 0, "end": 1, "text": "a"},' * MAX_UTTERANCES + one[:-1] + b"]"
    assert reason(many) == f"the transcript has more than {MAX_UTTERANCES} utterances"
    long = json.dumps([{"start": 0, "end": 1, "text": "a" * (MAX_TEXT_CHARS + 1)}]).encode()
    assert reason(long) == f"the transcript has more than {MAX_TEXT_CHARS} characters of text"
    assert reason(b" " * (MAX_INPUT_BYTES + 1)) == "the transcript file is larger than 64 MB"


def test_text_is_cleaned_for_storage() -> None:
    data = b'[{"start": 0, "end": 1, "text": "a\\u0000b \\ud800 \\n\\t c", "speaker": " agent "}]'
    (u,) = parse_transcript(data)
    assert (u.text, u.speaker) == ("ab ? c", "agent")
    (u,) = parse_transcript(b"\xef\xbb\xbf" + data)  # UTF-8 BOM
    assert u.text == "ab ? c"


OVERLAPPING = [
    Utterance(0.0, 4.0, "one two three four", "agent", 0),  # no word timings: spread 1 s each
    Utterance(2.0, 3.0, "sorry", "customer", 1, (Word(2.1, 2.6, "sorry"),)),
    Utterance(3.0, 5.0, "mono words", None, None, (Word(3.0, 3.9, "mono"), Word(4.1, 5.0, "words"))),
]


def test_words_in_overlapping_segments() -> None:
    # sorted by start: the customer's "sorry" sits inside the agent's spread "three"
    assert [w.text for w in words_in(OVERLAPPING, 1.0, 4.0)] == ["two", "three", "sorry", "mono", "four"]
    assert words_in(OVERLAPPING, 2.0, 2.4) == [Word(2.1, 2.6, "sorry")]  # midpoint 2.35 is inside
    assert words_in(OVERLAPPING, 2.4, 3.0, channel=1) == []  # midpoint 2.35 is outside
    # channel 0: the agent's words plus the channel-less ones; never the customer's
    assert [w.text for w in words_in(OVERLAPPING, 0.0, 5.0, channel=0)] == [
        "one", "two", "three", "mono", "four", "words"]
    assert [w.text for w in words_in(OVERLAPPING, 0.0, 5.0, speaker="customer")] == ["sorry"]
    assert words_in(OVERLAPPING, 0.0, 5.0, channel=1, speaker="agent") == []
    spread = words_in(OVERLAPPING, 0.0, 1.0, speaker="agent")
    assert spread == [Word(0.0, 1.0, "one")]
    assert words_in(OVERLAPPING, 10.0, 20.0) == []


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op, at = rng.randrange(5), rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[at:at + rng.randint(1, 20)]
        elif op == 1:
            b[at:at] = rng.choice([b"-->", b"<v ", b"<00:00:0", b'"', b"{", b"]", b"NaN", b"-1", b"\xff",
                                   b"\n\n", b"1e999", b'"start"', b"null", b"<", b":", b"\x00"])
        elif op == 2 and b:
            b[min(at, len(b) - 1)] = rng.randrange(256)
        elif op == 3:
            b[at:at] = b[at:at + rng.randint(1, 40)] * rng.randint(1, 3)
        else:
            b = b[:at]
    return bytes(b)


def test_fuzz_only_transcript_error_escapes() -> None:
    rng = random.Random(20261121)
    seeds = [CALLPULSE_JSON, WORDS_JSON, WHISPER_JSON, DEEPGRAM_JSON, WEBVTT.encode(), SRT.encode(),
             WEBVTT.encode("utf-16")]
    accepted = refused = 0
    for i in range(3000):
        if i % 4 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
            data = rng.choice([b"", b"WEBVTT\n\n", b"[", b"{", b"\xff\xfe"]) + data
        else:
            data = _mutate(rng, rng.choice(seeds))
        kw = rng.choice([{}, {"duration_s": 5.0, "channels": 2}, {"filename": "x.vtt"}])
        try:
            us = parse_transcript(data, **kw)  # type: ignore[arg-type]
        except TranscriptError as e:
            assert e.reason and "\n" not in e.reason
            refused += 1
            continue
        accepted += 1
        assert us == sorted(us, key=lambda u: u.start_s) and all(u.text for u in us)
        assert all(0 <= u.start_s <= u.end_s for u in us)
        words_in(us, 0.0, 10.0, channel=1)
    assert accepted > 100 and refused > 1000  # both paths were really exercised


def test_pathological_inputs_stay_fast() -> None:
    started = time.monotonic()
    for data in [b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + b"<v " * 300_000,
                 b"WEBVTT\n\n00:00.000 --> 00:01.000\n<v a" + b" " * 1_000_000,
                 b"WEBVTT\n\n" + b"00:00.000 --> " * 200_000,
                 b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + b"<1" * 500_000,
                 b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + b"x <00:00:00.500>" * 100_000]:
        with contextlib.suppress(TranscriptError):
            parse_transcript(data)
    assert time.monotonic() - started < 10
