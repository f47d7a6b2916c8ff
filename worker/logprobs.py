"""Logprobs in OpenAI's shapes: what a request asks the engine for, and how the answer reads.

Chat completions (``logprobs: true``, ``top_logprobs: N``) get ``{"content": [{"token",
"logprob", "bytes", "top_logprobs": [...]}], "refusal": null}``. Completions (``logprobs: N``) get
the legacy columns ``tokens``, ``token_logprobs``, ``top_logprobs`` (the N most likely tokens and
always the chosen one, as OpenAI documents) and ``text_offset``; with ``echo`` the prompt's
tokens come first, the first of them without a logprob. Streams carry the logprobs of the tokens
each chunk adds. Values come from the engine: the model's log-softmax before sampling parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubechat.openai_protocol import ChatCompletionRequest, CompletionRequest, SamplingFields

from .engine import GenerationRequest, TokenLogprob
from .token_bytes import TokenTable, token_table

#: what JSON cannot carry (-inf, for a token the model rules out) is sent as this, as vLLM does
FLOOR = -9999.0


def requested_logprobs(req: SamplingFields) -> tuple[int | None, int | None]:
    """``(logprobs, prompt_logprobs)`` for the engine: how many alternatives per generated and
    per prompt token the request wants (None: none at all)."""
    if isinstance(req, ChatCompletionRequest):
        return ((req.top_logprobs or 0) if req.logprobs else None), None
    if isinstance(req, CompletionRequest) and req.logprobs is not None:
        return req.logprobs, (req.logprobs if req.echo else None)
    return None, None


class LogprobsFormat:
    """Renders one job's logprobs, choice by choice (``seq`` is serving's ``_Sequence``: its
    ``index``, ``logprobs`` and ``prompt_logprobs``)."""

    def __init__(self, table: TokenTable, chat: bool, requests: list[GenerationRequest]) -> None:
        self.table = table
        self.chat = chat
        self.requests = requests
        self._sent: dict[int, int] = {}  # per choice: generated tokens already streamed
        self._offset: dict[int, int] = {}  # per choice: text offset after what was streamed

    def body(self, seq: Any) -> dict[str, Any]:
        """The ``logprobs`` of a whole choice (non-streamed answers)."""
        return self._render(seq, seq.logprobs, with_prompt=True)

    def delta(self, seq: Any) -> dict[str, Any] | None:
        """The ``logprobs`` of the tokens a choice generated since its last chunk (the prompt's,
        when echoed, with the first one); None when there are none."""
        start = self._sent.get(seq.index)
        first = start is None
        new = seq.logprobs[start or 0 :]
        self._sent[seq.index] = len(seq.logprobs)
        if not new and not (first and seq.prompt_logprobs):
            return None
        return self._render(seq, new, with_prompt=first)

    def _render(
        self, seq: Any, generated: Sequence[TokenLogprob], with_prompt: bool
    ) -> dict[str, Any]:
        if self.chat:
            return {"content": [self._chat_entry(lp) for lp in generated], "refusal": None}
        entries: list[tuple[int, TokenLogprob | None]] = []
        if with_prompt and seq.prompt_logprobs is not None:
            prompt = self.requests[seq.index].prompt_ids
            entries = list(zip(prompt, seq.prompt_logprobs, strict=True))
        entries += [(lp.token_id, lp) for lp in generated]
        return self._columns(seq.index, entries)

    def _chat_entry(self, lp: TokenLogprob) -> dict[str, Any]:
        return {
            **self._token(lp.token_id, lp.logprob),
            "top_logprobs": [self._token(t, v) for t, v in lp.top],
        }

    def _token(self, token_id: int, logprob: float) -> dict[str, Any]:
        return {
            "token": self.table.text(token_id),
            "logprob": max(logprob, FLOOR),
            "bytes": list(self.table.pieces[token_id]),
        }

    def _columns(
        self, index: int, entries: list[tuple[int, TokenLogprob | None]]
    ) -> dict[str, Any]:
        tokens, values, tops, offsets = [], [], [], []
        offset = self._offset.get(index, 0)
        for token_id, lp in entries:
            text = self.table.text(token_id)
            tokens.append(text)
            offsets.append(offset)
            offset += len(text)
            if lp is None:
                values.append(None)
                tops.append(None)
                continue
            values.append(max(lp.logprob, FLOOR))
            top = {}
            for t, v in lp.top:
                top.setdefault(self.table.text(t), max(v, FLOOR))
            top.setdefault(text, max(lp.logprob, FLOOR))
            tops.append(top)
        self._offset[index] = offset
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops,
            "text_offset": offsets,
        }


def logprobs_format(
    req: SamplingFields, chat: bool, requests: list[GenerationRequest], tokenizer: Any
) -> LogprobsFormat | None:
    """The renderer of a job's logprobs, or None when the request asked for none."""
    if requested_logprobs(req) == (None, None):
        return None
    return LogprobsFormat(token_table(tokenizer), chat, requests)
