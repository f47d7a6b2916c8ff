"""Grammar-constrained decoding (structured outputs, forced tool calls) with llguidance.

A :class:`Grammar` is checked and compiled once per request, on the event loop, and raises
:class:`GrammarError` (a 400 for the client) when llguidance cannot use it; the engine starts one
:class:`Matcher` per sequence and, at every step, masks the logits of the rows that have one
(:func:`mask_logits`, one bitmask for those rows) before picking their tokens, then advances
each matcher by the token picked. Rows without a grammar are untouched, so a constrained
sequence decodes inside the batch like any other.

llguidance was chosen over xgrammar and outlines-core: its wheel installs alone on a CPU machine
(xgrammar pulls triton), it computes each mask lazily from the grammar in about 0.1 ms instead of
compiling an automaton per schema first (outlines-core), it takes JSON schemas and Lark grammars
(tool calls: text, tags and a schema's JSON in one grammar), and it accepts any vocabulary given
as token bytes. The vocabulary comes from :mod:`token_bytes`, so every tokenizer the worker
loads (byte-level BPE and SentencePiece alike) gets grammars; llguidance's own converter reads
only some of transformers' fast tokenizers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.torch
import torch

from .token_bytes import token_table

#: JSON without free whitespace between tokens: a model (a random one above all) cannot fill
#: its answer with spaces, and the output is what ``json.dumps(..., separators=...)`` writes
JSON_OPTIONS = {"whitespace_flexible": False}


class GrammarError(ValueError):
    """llguidance cannot use this schema or grammar; the message says why."""


@dataclass(frozen=True)
class Grammar:
    """A checked grammar for one model's vocabulary: start a :class:`Matcher` per sequence."""

    text: str  # llguidance's serialized grammar
    compiler: GrammarCompiler

    def matcher(self) -> Matcher:
        """A fresh matcher at the start of the grammar."""
        return Matcher(llguidance.LLMatcher(self.compiler.tokenizer, self.text), self.compiler)


class Matcher:
    """One sequence's position in its grammar."""

    def __init__(self, matcher: llguidance.LLMatcher, compiler: GrammarCompiler) -> None:
        self._matcher = matcher
        self._compiler = compiler

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into row ``row`` of an llguidance bitmask."""
        llguidance.torch.fill_next_token_bitmask(self._matcher, bitmask, row)

    def advance(self, token: int) -> None:
        """Move past ``token``; GrammarError if the grammar does not allow it."""
        if not self._matcher.consume_token(token):
            raise GrammarError(f"token {token} breaks the grammar: {self._matcher.get_error()}")

    def ends_with(self, token: int) -> bool:
        """Whether ``token`` is an end-of-sequence token of the grammar (allowed only once the
        grammar is complete): the sequence stops there, without that token."""
        return token in self._compiler.eos


class GrammarCompiler:
    """Checks and compiles grammars for one tokenizer (its llguidance vocabulary is built once)."""

    def __init__(self, tokenizer: Any, eos_token_ids: set[int]) -> None:
        table = token_table(tokenizer)
        # llguidance reads a vocabulary as token bytes -> id (tiktoken's form); a grammar only
        # ever needs masks and token-by-token matching, never llguidance's own tokenization
        encoder: dict[bytes, int] = {}
        for token_id, data in enumerate(table.pieces):
            if token_id not in table.special and data and data not in encoder:
                encoder[data] = token_id
        names = tokenizer.convert_ids_to_tokens(sorted(table.special))
        special = dict(zip(names, sorted(table.special), strict=True))
        eos = sorted(i for i in eos_token_ids if 0 <= i < len(table.pieces))
        if not eos:
            raise GrammarError("the model has no end-of-sequence token to end a grammar with")
        self.eos = frozenset(eos)
        self.vocab_size = len(table.pieces)
        self.tokenizer = llguidance.LLTokenizer.from_tiktoken(
            encoder=encoder,
            special_tokens=special,
            pattern=r"\s+|\S+",
            eos_token=eos[0],
            n_vocab=self.vocab_size,
        )

    def json_schema(self, schema: dict | None, strict: bool = False) -> Grammar:
        """JSON matching ``schema`` (None: any JSON object). ``strict`` refuses keywords
        llguidance cannot enforce instead of ignoring them."""
        options = {**JSON_OPTIONS, "lenient": not strict}
        try:
            text = llguidance.LLMatcher.grammar_from_json_schema(
                schema if schema is not None else {"type": "object"}, defaults=options
            )
        except BaseException as exc:  # not a schema llguidance can read at all
            raise _refusal(exc) from exc
        return self._checked(text)

    def lark(self, grammar: str) -> Grammar:
        """A grammar in llguidance's Lark dialect (``%json {...}`` embeds a JSON schema)."""
        try:
            text = llguidance.LLMatcher.grammar_from_lark(grammar)
        except BaseException as exc:
            raise _refusal(exc) from exc
        return self._checked(text)

    def _checked(self, text: str) -> Grammar:
        try:
            error = llguidance.LLMatcher.validate_grammar(text, self.tokenizer)
        except BaseException as exc:
            error = str(_refusal(exc))
        if error:
            raise GrammarError(error)
        return Grammar(text, self)


def mask_logits(logits: torch.Tensor, matchers: list[Matcher]) -> torch.Tensor:
    """``logits`` (rows, vocab: one row per matcher) with every token the row's grammar does not
    allow next set to -inf, also the model's rows past the tokenizer's vocabulary."""
    vocab = matchers[0]._compiler.vocab_size
    bitmask = llguidance.torch.allocate_token_bitmask(len(matchers), vocab)
    for row, matcher in enumerate(matchers):
        matcher.fill(bitmask, row)
    bits = (bitmask.unsqueeze(-1) >> _SHIFTS.to(bitmask.device)) & 1  # (rows, words, 32)
    allowed = bits.reshape(len(matchers), -1)[:, :vocab].to(torch.bool)
    width = logits.shape[-1]
    if width > vocab:
        allowed = torch.cat([allowed, allowed.new_zeros(len(matchers), width - vocab)], dim=1)
    return logits.masked_fill(~allowed[:, :width].to(logits.device), float("-inf"))


_SHIFTS = torch.arange(32, dtype=torch.int32)


def _refusal(exc: BaseException) -> GrammarError:
    """The GrammarError for what llguidance raised on input it cannot take: a Python error, or
    a Rust panic surfaced as pyo3's PanicException (a BaseException); anything else (a
    cancellation, an interrupt) is raised again as it was."""
    if not (isinstance(exc, Exception) or type(exc).__name__ == "PanicException"):
        raise exc
    return GrammarError((str(exc) or type(exc).__name__).splitlines()[0][:500])


_COMPILERS: dict[int, tuple[Any, GrammarCompiler]] = {}
_LOCK = threading.Lock()


def grammar_compiler(tokenizer: Any, eos_token_ids: set[int]) -> GrammarCompiler:
    """The compiler of ``tokenizer`` (built on first use, then cached)."""
    with _LOCK:
        cached = _COMPILERS.get(id(tokenizer))
        if cached is None or cached[0] is not tokenizer:
            cached = (tokenizer, GrammarCompiler(tokenizer, eos_token_ids))
            _COMPILERS[id(tokenizer)] = cached
        return cached[1]
