"""What every generative (think/answer) backend shares, whatever the checkpoint's layout: reading the
label's probability from the decoder while it generates, turning a parsed generation into an
EmotionResult with timed evidence, and cutting audio into an encoder's 30 s windows.

`omni` (Qwen2.5-Omni thinker) and `r1-omni` (the HumanOmni layout) differ in how a prompt becomes
model inputs; they subclass GenerativeEmotionModel and implement `_prompt` and `_generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from worker.pipeline import labels, reasoning
from worker.pipeline.batching import OomGuard
from worker.pipeline.contracts import EmotionResult, Evidence, SegmentInput
from worker.pipeline.speech import prosody
from worker.pipeline.voice.generative.answer_parsing import ParsedAnswer, parse_generation

DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_MAX_BATCH = 8
AUDIO_WINDOW_S = 30.0  # Whisper-style encoders see at most 30 s per input
MIN_SAMPLES = 400
THINK_EVIDENCE_CHARS = 600
# Without label-token probabilities (see _label_scores) the answer's structure is all we know.
CONFIDENCE_WELL_FORMED = 0.6
CONFIDENCE_MALFORMED = 0.4
# Label tokens must carry at least this share of the next-token mass for their probabilities to
# stand in for the answer's scores; below it the model was about to write something else.
MIN_LABEL_MASS = 0.5

Prompted = TypeVar("Prompted")
Generated = tuple[str, "dict[str, float] | None"]


def audio_windows(wave: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """Consecutive AUDIO_WINDOW_S chunks covering the whole wave (never cut), each long enough for
    the feature extractor."""
    window = int(AUDIO_WINDOW_S * sample_rate)
    chunks = [wave[i: i + window] for i in range(0, max(len(wave), 1), window)]
    return [c if len(c) >= MIN_SAMPLES else np.pad(c, (0, MIN_SAMPLES - len(c))) for c in chunks]


class LabelProbabilityRecorder:
    """A logits processor that only watches: per generation step, the probability of each label's
    first tokens. A few numbers per step, where `output_logits` would keep steps × batch × vocabulary
    (128 × 8 × 152k floats) on the GPU and copy them back."""

    def __init__(self, token_ids: Any) -> None:
        self.token_ids = token_ids
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.steps.append(torch.softmax(scores.float(), dim=-1)[:, self.token_ids])
        return scores

    def per_row(self) -> np.ndarray:
        """(batch, steps, label tokens) on the CPU; steps == 0 when nothing was generated."""
        import torch

        if not self.steps:
            return np.zeros((0, 0, int(self.token_ids.numel())), dtype=np.float32)
        return torch.stack(self.steps, dim=1).cpu().numpy()


class GenerativeEmotionModel(Generic[Prompted]):
    """EmotionModel over a generative checkpoint: one generation per segment, batched, OOM-guarded."""

    name = "generative"

    def __init__(self, tokenizer: Any, version: str, max_new_tokens: int, max_batch: int) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.version = version
        self.max_new_tokens = int(max_new_tokens)
        self.labels = labels.CANONICAL_LABELS
        self.label_token_ids = self._label_first_tokens()
        # Column of each label's tokens in what LabelProbabilityRecorder records.
        self.label_columns: dict[str, list[int]] = {}
        self.recorded_token_ids: list[int] = []
        for label, token_ids in (self.label_token_ids or {}).items():
            start = len(self.recorded_token_ids)
            self.recorded_token_ids.extend(token_ids)
            self.label_columns[label] = list(range(start, len(self.recorded_token_ids)))
        self.guard = OomGuard(max_batch)

    # -- what a subclass provides ------------------------------------------------------------

    def _prompt(self, segment: SegmentInput) -> Prompted:
        raise NotImplementedError

    def _cost(self, prompted: Prompted) -> int:
        """Sort key: similar-length prompts share a batch, so little padding is computed."""
        raise NotImplementedError

    def _generate(self, items: Sequence[Prompted]) -> list[Generated]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        if not batch:
            return []
        prompted = [self._prompt(segment) for segment in batch]
        order = sorted(range(len(batch)), key=lambda i: self._cost(prompted[i]))
        generated = self.guard.run(self._generate, [prompted[i] for i in order])
        by_input: list[Generated] = [("", None)] * len(batch)
        for position, index in enumerate(order):
            by_input[index] = generated[position]
        return [self._result(segment, text, token_scores)
                for segment, (text, token_scores) in zip(batch, by_input, strict=True)]

    def _recorder(self, device: Any) -> LabelProbabilityRecorder:
        import torch

        return LabelProbabilityRecorder(torch.tensor(self.recorded_token_ids, device=device))

    def _logits_processors(self, recorder: LabelProbabilityRecorder) -> Any:
        from transformers import LogitsProcessorList

        return LogitsProcessorList([recorder] if self.recorded_token_ids else [])

    def _decode(self, new_tokens: Any, recorder: LabelProbabilityRecorder) -> list[Generated]:
        """Each row's text and, where they can stand for the answer, its label probabilities."""
        new_tokens = new_tokens.cpu()
        label_probabilities = recorder.per_row()
        out = []
        for row in range(new_tokens.shape[0]):
            ids = new_tokens[row].tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            steps = label_probabilities[row] if len(label_probabilities) else label_probabilities
            out.append((text, self._label_scores(ids, steps)))
        return out

    def _label_first_tokens(self) -> dict[str, list[int]] | None:
        """First tokens each label may start with after `<answer>`. A token shared by two labels
        ("s" for sad/surprise in a small vocabulary) cannot tell them apart and is dropped; if a
        label is left with none, None: the heuristic confidence is used instead."""
        candidates: dict[str, set[int]] = {}
        for label in self.labels:
            ids: set[int] = set()
            for spelling in (label, f" {label}", label.capitalize(), f" {label.capitalize()}"):
                encoded = self.tokenizer.encode(spelling, add_special_tokens=False)
                if encoded:
                    ids.add(int(encoded[0]))
            candidates[label] = ids
        owners: dict[int, int] = {}
        for ids in candidates.values():
            for token_id in ids:
                owners[token_id] = owners.get(token_id, 0) + 1
        out = {label: sorted(i for i in ids if owners[i] == 1) for label, ids in candidates.items()}
        return out if all(out.values()) else None

    def _label_scores(self, ids: list[int], step_probabilities: np.ndarray) -> dict[str, float] | None:
        """Label probabilities at the first answer token, as the decoder saw them while generating
        (recorded by LabelProbabilityRecorder, shape steps × label tokens). None when they cannot
        stand for the answer."""
        if not self.label_columns or len(step_probabilities) == 0:
            return None
        position = None
        for k in range(1, len(ids) + 1):
            if "<answer>" in self.tokenizer.decode(ids[:k], skip_special_tokens=True).lower():
                position = k
                break
        # Skip whitespace tokens between "<answer>" and the label.
        while position is not None and position < len(ids) and not self.tokenizer.decode(
            [ids[position]], skip_special_tokens=True
        ).strip():
            position += 1
        if position is None or position >= len(step_probabilities):
            return None
        at_answer = step_probabilities[position]
        mass = {label: float(at_answer[columns].sum()) for label, columns in self.label_columns.items()}
        total = sum(mass.values())
        if total < MIN_LABEL_MASS:
            return None
        return {label: p / total for label, p in mass.items()}

    def _result(
        self, segment: SegmentInput, text: str, token_scores: dict[str, float] | None
    ) -> EmotionResult:
        parsed = parse_generation(text)
        end_s = max(segment.end_s, segment.start_s)
        span = reasoning.Span(segment.start_s, end_s)
        scores, confidence = self._scores(parsed, token_scores)
        label = parsed.label or "neutral"
        evidence: list[Evidence] = [
            reasoning.classifier_evidence(scores, parsed.raw_label, span, "Omni model")
        ]
        if parsed.think:
            think = parsed.think if len(parsed.think) <= THINK_EVIDENCE_CHARS else (
                parsed.think[:THINK_EVIDENCE_CHARS].rsplit(" ", 1)[0] + "…")
            evidence.append(Evidence(
                start_s=span.start_s, end_s=span.end_s, modality="audio", cue="think",
                value=parsed.answer[:64] or None, text=f"Model reasoning over {span.label()}: {think}",
            ))
        acoustics = segment.acoustics or prosody.measure(segment.audio, segment.sample_rate)
        evidence.extend(reasoning.prosody_evidence(acoustics, segment.baseline or None, span))
        summary = reasoning.reasoning_text(label, confidence, evidence, segment.start_s, end_s)
        if parsed.label is None:
            summary = (f"Model answer not understood (label unknown) for {span.label()}; "
                       f"raw output: {text.strip()[:2000]}")
        elif parsed.think:
            summary = f"{summary}\n\nModel reasoning: {parsed.think}"
        valence, arousal = labels.valence_arousal(scores) if parsed.label else (None, None)
        return EmotionResult(
            label=label, raw_label=parsed.raw_label, scores=scores, confidence=float(confidence),
            valence=valence, arousal=arousal, evidence=evidence, reasoning_text=summary,
        )

    def _scores(
        self, parsed: ParsedAnswer, token_scores: dict[str, float] | None
    ) -> tuple[dict[str, float], float]:
        if parsed.label is None:
            # No opinion: uniform scores, confidence 0 (see answer_parsing's module docstring).
            return {label: 1.0 / len(self.labels) for label in self.labels}, 0.0
        if token_scores is not None and parsed.label in token_scores:
            return token_scores, token_scores[parsed.label]
        confidence = CONFIDENCE_WELL_FORMED if parsed.well_formed else CONFIDENCE_MALFORMED
        others = [label for label in self.labels if label != parsed.label]
        scores = dict.fromkeys(others, (1.0 - confidence) / len(others))
        scores[parsed.label] = confidence
        return scores, confidence
