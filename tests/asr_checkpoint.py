"""A tiny, randomly initialised Whisper checkpoint of the real architecture, saved the way a real one
is (model, feature extractor, tokenizer, generation config with alignment heads), so the ASR stage
loads it through its production path with no download. Random weights speak gibberish: tests
check the structure of what comes out, never the words."""

from __future__ import annotations

import json
from pathlib import Path

# Byte-level BPE as GPT-2/Whisper do it: every byte is a printable stand-in character.
LANGUAGES = ("en", "de", "fr", "es")
# Whisper's special tokens, in its order; the timestamp tokens follow <|notimestamps|>.
SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES),
            "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
            "<|notimestamps|>")
TIMESTAMPS = 1501  # <|0.00|> … <|30.00|>: a 30 s window at 0.02 s
# A few merges so some tokens are longer than a byte, as in the real vocabulary.
MERGES = ("Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a n")


def _byte_symbols() -> list[str]:
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def build_whisper(path: Path, seed: int = 0, max_length: int = 48) -> Path:
    """Write the checkpoint to ``path`` and return it. ``max_length`` bounds each window's decoding
    (a random model rarely says end-of-text by itself)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    for merge in MERGES:
        vocab["".join(merge.split())] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    tokenizer = WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    assert ids["<|endoftext|>"] == len(vocab), "specials must follow the text tokens"
    assert ids["<|notimestamps|>"] == len(vocab) + len(SPECIALS) - 1

    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=32,
        encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=128,
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"], decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=[220, ids["<|endoftext|>"]], suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Output and input embeddings are tied: rows with a larger norm win the argmax more often.
        # Favour letters, the space and the merges so the random model "speaks" printable words
        # rather than lone UTF-8 continuation bytes.
        weight = model.model.decoder.embed_tokens.weight
        speakable = [i for i, sym in enumerate(_byte_symbols()) if sym.isascii() and sym.isalpha()]
        speakable += [vocab["Ġ"], vocab["."], *range(256, len(vocab))]
        scale = torch.full((weight.shape[0], 1), 0.2)
        scale[speakable] = 4.0
        scale[[vocab["Ġ"], vocab["Ġt"], vocab["Ġa"], vocab["Ġs"], vocab["Ġthe"]]] = 6.0
        weight.mul_(scale)
        # A random decoder repeats one token forever; position-dominated states vary it.
        model.model.decoder.embed_positions.weight.mul_(8.0)
    generation = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        max_length=max_length, is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, begin_suppress_tokens=[220, ids["<|endoftext|>"]],
        suppress_tokens=[], return_timestamps=False,
        # Cross-attention heads whose alignment gives word times (DTW); every head of the last layer.
        alignment_heads=[[1, 0], [1, 1]],
    )
    model.generation_config = generation
    model.save_pretrained(path)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer)
    processor.save_pretrained(path)
    return path
