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

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import llguidance
import llguidance.torch
import numpy as np
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
    # a matcher that never moves: building one costs about a millisecond (the lexer is set up),
    # a copy of it a few microseconds, and the engine thread starts one per sequence
    _start: llguidance.LLMatcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        start = llguidance.LLMatcher(self.compiler.tokenizer, self.text)
        object.__setattr__(self, "_start", start)

    def matcher(self) -> Matcher:
        """A fresh matcher at the start of the grammar."""
        return Matcher(self._start.deep_copy(), self.compiler)


class Matcher:
    """One sequence's position in its grammar, and the tokens allowed next."""

    def __init__(self, matcher: llguidance.LLMatcher, compiler: GrammarCompiler) -> None:
        self._matcher = matcher
        self._compiler = compiler
        self._allowed: torch.Tensor | None = None  # the next mask, once computed
        self._trial: tuple[int, llguidance.LLMatcher, torch.Tensor] | None = None

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into row ``row`` of an llguidance bitmask."""
        if self._allowed is None:
            self._allowed = _next_mask(self._matcher, self._compiler.vocab_size)
        bitmask[row] = self._allowed[0]

    def accepts(self, token: int) -> bool:
        """Whether the sequence can go on after ``token``: the grammar allows it, and llguidance
        can tell what may follow it. (llguidance 1.9.1 panics on the mask after a string that
        reaches its ``maxLength`` with a multi-byte character, which leaves only the end of
        sequence allowed: such a token is refused here, so that another is picked, instead of
        the answer ending as invalid JSON.) The move is kept for :meth:`advance`."""
        if token in self._compiler.eos:
            return self._matcher.is_accepting()
        trial = self._matcher.deep_copy()  # a few microseconds: the grammar itself is shared
        if not trial.consume_token(token):
            return False
        allowed = _next_mask(trial, self._compiler.vocab_size)
        if trial.is_error():
            return False
        self._trial = (token, trial, allowed)
        return True

    def advance(self, token: int) -> None:
        """Move past ``token``; GrammarError if the grammar does not allow it."""
        if (self._trial is None or self._trial[0] != token) and not self.accepts(token):
            raise GrammarError(f"token {token} breaks the grammar: {self._matcher.get_error()}")
        assert self._trial is not None
        _, self._matcher, self._allowed = self._trial
        self._trial = None

    def ends_with(self, token: int) -> bool:
        """Whether ``token`` is an end-of-sequence token of the grammar (allowed only once the
        grammar is complete): the sequence stops there, without that token."""
        return token in self._compiler.eos


def _next_mask(matcher: llguidance.LLMatcher, vocab: int) -> torch.Tensor:
    """The bitmask (one row) of the tokens ``matcher`` allows next."""
    bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)
    llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
    return bitmask


def pick_allowed(
    logits: torch.Tensor, matcher: Matcher, pick: Callable[[torch.Tensor], int], first: int
) -> int:
    """``first`` (picked from the row's masked ``logits``) if the sequence can go on after it,
    else the next choice of ``pick`` with every refused token masked out as well (see
    :meth:`Matcher.accepts`); GrammarError after a few refusals."""
    token = first
    for _ in range(REPICKS):
        if matcher.accepts(token):
            return token
        logits = logits.clone()
        logits[token] = float("-inf")
        token = pick(logits)
    raise GrammarError(f"no token the grammar can go on from (last tried: {token})")


#: how many refused tokens a step tries past before it fails the sequence
REPICKS = 8


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

        # clients send the same schema or tools with every request: each is compiled once
        self._json_schema = lru_cache(maxsize=COMPILED_GRAMMARS)(self._compile_json_schema)
        self._lark = lru_cache(maxsize=COMPILED_GRAMMARS)(self._compile_lark)

    def json_schema(self, schema: dict | None, strict: bool = False) -> Grammar:
        """JSON matching ``schema`` (None: any JSON object). ``strict`` refuses keywords
        llguidance cannot enforce instead of ignoring them."""
        try:
            key = json.dumps(schema if schema is not None else {"type": "object"}, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise GrammarError(f"the schema is not JSON: {exc}") from exc
        return self._json_schema(key, strict)

    def _compile_json_schema(self, schema: str, strict: bool) -> Grammar:
        options = {**JSON_OPTIONS, "lenient": not strict}
        try:
            text = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options)
        except BaseException as exc:  # not a schema llguidance can read at all
            raise _refusal(exc) from exc
        return self._checked(text)

    def lark(self, grammar: str) -> Grammar:
        """A grammar in llguidance's Lark dialect (``%json {...}`` embeds a JSON schema)."""
        return self._lark(grammar)

    def _compile_lark(self, grammar: str) -> Grammar:
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
    # bit b of 32-bit word w allows token 32 w + b: little-endian words, so the bytes' bits in
    # little-endian order are the tokens in order (numpy unpacks them in one pass)
    words = bitmask.numpy().astype("<i4", copy=False)
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    width = logits.shape[-1]
    allowed = torch.zeros(len(matchers), width, dtype=torch.bool)
    known = min(width, vocab)
    allowed[:, :known] = torch.from_numpy(bits[:, :known])
    return torch.where(allowed.to(logits.device), logits, float("-inf"))


def _refusal(exc: BaseException) -> GrammarError:
    """The GrammarError for what llguidance raised on input it cannot take: a Python error, or
    a Rust panic surfaced as pyo3's PanicException (a BaseException); anything else (a
    cancellation, an interrupt) is raised again as it was."""
    if not (isinstance(exc, Exception) or type(exc).__name__ == "PanicException"):
        raise exc
    return GrammarError((str(exc) or type(exc).__name__).splitlines()[0][:500])


#: grammars each compiler keeps compiled (the schemas and tool sets seen most recently)
COMPILED_GRAMMARS = 256

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
