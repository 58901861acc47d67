"""A scripted escalating customer call, made at test time with espeak-ng and sox (no audio is
committed): stereo, 8 kHz μ-law like a contact centre's recorder, agent on channel 0 (polite
throughout), customer on channel 1 going neutral → complaining → furious → thankful.

It is what a new user tries first, and what the product must get right: the furious turns must come
out angry (or negative with angry in the top two), the thankful one positive. Used by
tests/unit/test_escalation.py and bench/bench_escalation.py; `python -m tests.escalation_call OUT.wav`
writes one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GAP_S = 0.8  # silence between turns


@dataclass(frozen=True)
class Turn:
    channel: int  # 0 agent, 1 customer
    mood: str  # what the script means the customer to feel: neutral, complaining, furious, thankful
    text: str


# espeak-ng has no emotions; the furious turns get what a shouting voice has: louder, higher,
# faster, more pitch range (the words carry the rest).
VOICE = {
    "agent": ["-v", "en-us+f3", "-s", "160", "-p", "55", "-a", "90"],
    "neutral": ["-v", "en+m3", "-s", "165", "-p", "45", "-a", "100"],
    "complaining": ["-v", "en+m3", "-s", "170", "-p", "50", "-a", "120"],
    "furious": ["-v", "en+m3", "-s", "195", "-p", "75", "-a", "200"],
    "thankful": ["-v", "en+m3", "-s", "160", "-p", "55", "-a", "100"],
}

SCRIPT = (
    Turn(0, "agent", "Thank you for calling Northwind Telecom, my name is Sarah. How can I help you today?"),
    Turn(1, "neutral", "Hello. I am calling about my internet bill for this month."),
    Turn(0, "agent", "Of course. Could you tell me your account number, please?"),
    Turn(1, "neutral", "Yes, it is four five seven two, nine nine one."),
    Turn(0, "agent", "Thank you. I can see your account. What seems to be the problem?"),
    Turn(1, "complaining", "I was charged twice this month, and my connection keeps dropping every "
         "evening. This is really not good enough."),
    Turn(0, "agent", "I am sorry to hear that. Let me check what happened with the charge."),
    Turn(1, "furious", "This is absolutely ridiculous! I have called you three times already and "
         "nobody fixes anything! I am sick of your lies!"),
    Turn(0, "agent", "I understand your frustration, and I apologise. I will do my best to fix it now."),
    Turn(1, "furious", "No! I want to cancel my contract! Speak to your manager, right now! This is "
         "outrageous, I am furious!"),
    Turn(0, "agent", "I have refunded the double charge and booked a technician for tomorrow morning. "
         "I have also credited one month for free."),
    Turn(1, "thankful", "Oh, wonderful, thank you so much! That is great, I really appreciate your help. "
         "You have been lovely."),
    Turn(0, "agent", "You are very welcome. Have a lovely evening."),
)


@dataclass(frozen=True)
class PlacedTurn:
    turn: Turn
    start_s: float
    end_s: float


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def build(out: Path, script: tuple[Turn, ...] = SCRIPT) -> list[PlacedTurn]:
    """Write the call to ``out`` (a .wav: stereo, 8 kHz, μ-law) and return where each turn lies."""
    placed: list[PlacedTurn] = []
    with tempfile.TemporaryDirectory(prefix="escalation-") as tmp:
        work = Path(tmp)
        lanes: dict[int, list[Path]] = {0: [], 1: []}
        t = 0.5
        for k, turn in enumerate(script):
            raw = work / f"turn{k}.wav"
            voice = VOICE["agent" if turn.channel == 0 else turn.mood]
            subprocess.run(["espeak-ng", *voice, "-w", str(raw), turn.text], check=True, capture_output=True)
            clip = work / f"turn{k}_8k.wav"
            # Telephone band, then placed at its start time on its own channel.
            subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(clip),
                            "sinc", "300-3400", "pad", f"{t:.3f}", "0"], check=True, capture_output=True)
            duration = float(subprocess.run(["soxi", "-D", str(raw)], check=True, capture_output=True,
                                            text=True).stdout)
            placed.append(PlacedTurn(turn, round(t, 3), round(t + duration, 3)))
            lanes[turn.channel].append(clip)
            t += duration + GAP_S
        channels = []
        for ch, clips in lanes.items():
            lane = work / f"lane{ch}.wav"
            # sox -m scales each input by 1/n unless told otherwise: -v 1 keeps every turn's level.
            inputs = [a for c in clips for a in ("-v", "1", str(c))] if len(clips) > 1 else [str(clips[0])]
            subprocess.run(["sox", *(["-m"] if len(clips) > 1 else []), *inputs, str(lane), "pad", "0",
                            f"{t:.3f}", "trim", "0", f"{t:.3f}"], check=True, capture_output=True)
            channels.append(lane)
        subprocess.run(["sox", "-M", *map(str, channels), "-r", "8000", "-e", "u-law", "-b", "8",
                        str(out)], check=True, capture_output=True)
    return placed


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "escalation_call.wav")
    for p in build(target):
        print(f"{p.start_s:6.2f}–{p.end_s:6.2f}  ch{p.turn.channel}  {p.turn.mood:<11} {p.turn.text}")
    print(f"wrote {target}")
