"""Turning a stream of token ids into a stream of text, with stop strings.

Decoding token by token breaks multi-byte characters and sentencepiece's leading spaces, so text is
decoded over a sliding window and only released once it is stable (no trailing replacement
character). Text that could be the start of a stop string is held back until it is clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

try:
    from transformers.tokenization_utils_tokenizers import TokenizersBackend
except ImportError:  # a transformers without the fast tokenizers' backend class
    TokenizersBackend = None


@dataclass
class IncrementalDecoder:
    """Decodes a growing list of token ids into text deltas."""

    tokenizer: Any
    ids: list[int] = field(default_factory=list)
    _prefix: int = 0  # start of the window re-decoded for context
    _read: int = 0  # tokens already turned into released text
    _backend: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        # A fast tokenizer's decode (skip_special_tokens, no clean-up) is its Rust backend's; two
        # calls per streamed token through the Python wrapper cost 5x the backend's own time.
        decode = getattr(type(self.tokenizer), "_decode", None)
        if TokenizersBackend is not None and decode is TokenizersBackend._decode:
            self._backend = self.tokenizer.backend_tokenizer

    def push(self, token_id: int) -> str:
        """Add one token; return the newly stable text (possibly empty)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        full_text = self._decode(self.ids[self._prefix :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of the stream."""
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        full_text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return full_text[len(prefix_text) :] if len(full_text) > len(prefix_text) else ""

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=True)
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


@dataclass
class StopMatcher:
    """Finds stop strings in streamed text, holding back possible beginnings of one."""

    stops: list[str]
    _pending: str = ""
    stopped: bool = False

    def feed(self, text: str) -> str:
        """Add text; return what is safe to send. Sets ``stopped`` when a stop string appears."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self._pending += text
        cut = min((i for s in self.stops if (i := self._pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            out, self._pending, self.stopped = self._pending[:cut], "", True
            return out
        hold = self._longest_partial()
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return out

    def flush(self) -> str:
        """Release held-back text at the end of the stream."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out

    def _longest_partial(self) -> int:
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(s[:n]):
                    best = n
                    break
        return best
