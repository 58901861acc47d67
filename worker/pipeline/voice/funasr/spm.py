"""Reading a SentencePiece model file (`*.bpe.model`) without the sentencepiece package: the file
is a protobuf `ModelProto` whose field 1 repeats `SentencePiece {piece = 1; score = 2; type = 3}`.
Decoding CTC output needs only the id → piece table, so we read that and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁": SentencePiece's word-boundary mark


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one protobuf message, length-delimited values as bytes."""
    out: list[tuple[int, int, bytes | int]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((field, wire, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            out.append((field, wire, data[pos: pos + size]))
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            out.append((field, wire, data[pos: pos + width]))
            pos += width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


@dataclass(frozen=True)
class Vocabulary:
    pieces: tuple[str, ...]
    types: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.pieces)

    def ids(self) -> dict[str, int]:
        return {piece: i for i, piece in enumerate(self.pieces)}

    def text(self, ids: list[int]) -> str:
        """Pieces joined as SentencePiece decodes them: ▁ is a space, bytes are bytes, control and
        unknown pieces vanish."""
        raw = bytearray()
        for i in ids:
            kind, piece = self.types[i], self.pieces[i]
            if kind in (CONTROL, UNKNOWN, UNUSED):
                continue
            if kind == BYTE and piece.startswith("<0x") and piece.endswith(">"):
                raw.append(int(piece[3:-1], 16))
            else:
                raw.extend(piece.replace(SPACE, " ").encode("utf-8"))
        return raw.decode("utf-8", errors="replace").lstrip(" ")


def read(path: Path) -> Vocabulary:
    try:
        pieces, types = [], []
        for field, wire, value in _fields(path.read_bytes()):
            if field != 1 or wire != 2 or not isinstance(value, bytes):
                continue
            piece, kind = "", NORMAL
            for sub, sub_wire, sub_value in _fields(value):
                if sub == 1 and sub_wire == 2 and isinstance(sub_value, bytes):
                    piece = sub_value.decode("utf-8")
                elif sub == 3 and sub_wire == 0 and isinstance(sub_value, int):
                    kind = sub_value
            pieces.append(piece)
            types.append(kind)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a SentencePiece model: {exc}") from exc
    if not pieces:
        raise ValueError(f"{path} is not a SentencePiece model (no pieces)")
    return Vocabulary(tuple(pieces), tuple(types))


def write(path: Path, pieces: list[tuple[str, int]]) -> None:
    """A minimal model file holding only the pieces (piece, type), score 0 — what tests need to lay
    out a release; real files carry trainer and normaliser specs too, which `read` skips."""
    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    blob = bytearray()
    for piece, kind in pieces:
        text = piece.encode("utf-8")
        body = b"\x0a" + varint(len(text)) + text + b"\x15" + b"\x00\x00\x00\x00" + b"\x18" + varint(kind)
        blob += b"\x0a" + varint(len(body)) + body
    blob += b"\x12\x00"  # an empty trainer_spec (field 2), as real files have one
    path.write_bytes(bytes(blob))
