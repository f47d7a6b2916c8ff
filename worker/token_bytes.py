"""The bytes each token id stands for, for any tokenizer the worker loads.

Logprobs report a token's bytes (chat's ``bytes`` field: a token may hold part of a UTF-8
character) and the grammar engine matches tokens by their bytes, so both read one table. Two
families cover the checkpoints served: byte-level BPE (GPT-2, Llama 3, Qwen2: each byte drawn as
a printable character) and SentencePiece pieces (Llama 2, Vicuna, Baichuan, Metaspace
tokenizers: ``▁`` for a space, ``<0xNN>`` for a byte the vocabulary lacks). Added tokens (ChatML's
``<|im_start|>``, tool-call tags) stand for their text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers.convert_slow_tokenizer import bytes_to_unicode

_SPACE = "▁"


@dataclass(frozen=True)
class TokenTable:
    """Each token id's bytes, and which ids are special (never produced by a grammar)."""

    pieces: list[bytes]
    special: frozenset[int]

    def text(self, token_id: int) -> str:
        """The token as text; a token holding part of a UTF-8 character as ``bytes:\\xNN..``,
        as OpenAI writes such tokens."""
        data = self.pieces[token_id] if 0 <= token_id < len(self.pieces) else b""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


_TABLES: dict[int, tuple[Any, TokenTable]] = {}


def token_table(tokenizer: Any) -> TokenTable:
    """The table of ``tokenizer`` (built once per tokenizer object, then cached)."""
    cached = _TABLES.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    table = _build(tokenizer)
    _TABLES[id(tokenizer)] = (tokenizer, table)
    return table


def _build(tokenizer: Any) -> TokenTable:
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    added = {
        i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if i < size
    }
    special = {i for i in getattr(tokenizer, "all_special_ids", []) if 0 <= i < size}
    special |= {
        i
        for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
        if getattr(t, "special", False) and i < size
    }
    byte_level = _is_byte_level(tokenizer, pieces)
    decode = _byte_level_piece if byte_level else _sentencepiece_piece
    out = []
    for i, piece in enumerate(pieces):
        if i in added:
            out.append(added[i].encode("utf-8"))
        elif piece is None:
            out.append(b"")
        else:
            out.append(decode(piece))
    return TokenTable(out, frozenset(special))


def _decoder_types(tokenizer: Any) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = {decoder.get("type", "")}
    kinds.update(d.get("type", "") for d in decoder.get("decoders", []) or [])
    return kinds


def _is_byte_level(tokenizer: Any, pieces: list[str | None]) -> bool:
    kinds = _decoder_types(tokenizer)
    if "ByteLevel" in kinds:
        return True
    if kinds - {""}:
        return False
    # no Rust backend to ask (a slow tokenizer): byte-level vocabularies draw every byte as one
    # of 256 printable characters, and spell a leading space "Ġ"
    alphabet = set(_UNICODE_TO_BYTE)
    words = [p for p in pieces if p]
    return any("Ġ" in p for p in words) and all(set(p) <= alphabet for p in words[:1000])


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def _byte_level_piece(piece: str) -> bytes:
    try:
        return bytes(_UNICODE_TO_BYTE[c] for c in piece)
    except KeyError:  # not drawn from the byte alphabet (an added token stored as a piece)
        return piece.encode("utf-8")


def _sentencepiece_piece(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece.replace(_SPACE, " ").encode("utf-8")
