"""The server-sent events of one streamed completion: OpenAI's chunk objects as ``data:`` lines.

Every chunk of a stream repeats one head (id, object, created, model), and nearly every chunk
carries one text delta and nothing else. The head is rendered once per stream, and a text delta's
event is put together from it and the text's JSON string, instead of a ``json.dumps`` of the
whole chunk for every token (a quarter of the worker's event-loop time per token). The result is
byte for byte what ``json.dumps`` of the chunk gives, which :meth:`StreamChunks.event` renders
for every other chunk.
"""

from __future__ import annotations

import json
from typing import Any

from kubechat.sse import DONE_EVENT as DONE_EVENT  # the last event of every stream
from kubechat.sse import error_event as error_event  # the one home of both: kubechat/sse.py

KEEPALIVE = ": keep-alive\n\n"  # an SSE comment: clients skip it, proxies see the stream alive


class StreamChunks:
    """Renders the chunks of one stream (a chat or a text completion)."""

    def __init__(self, rid: str, chat: bool, created: int, model: str, include_usage: bool) -> None:
        self.chat = chat
        self._head = {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        head = json.dumps(self._head, ensure_ascii=False)
        self._prefix = f'data: {head[:-1]}, "choices": ['
        self._suffix = ', "usage": null}\n\n' if include_usage else "}\n\n"
        if chat:
            self._delta = '{"index": %d, "delta": {"content": %s}, "logprobs": null, ' \
                '"finish_reason": null}]'  # fmt: skip
        else:
            self._delta = '{"index": %d, "text": %s, "logprobs": null, "finish_reason": null}]'

    def event(self, choices: list[dict], usage: dict | None = None) -> str:
        """The event of a chunk with these choices (and ``usage``, when the stream reports it)."""
        body: dict[str, Any] = {**self._head, "choices": choices}
        if self._include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def opening(self, index: int, echo: str | None = None) -> str | None:
        """A choice's first event: the assistant role (chat), the prompt when it is echoed
        (completions), or None."""
        if self.chat:
            delta = {"role": "assistant", "content": ""}
            return self.event(
                [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]
            )
        if echo is None:
            return None
        return self.event([self.choice(index, echo, None)])

    def choice(
        self, index: int, text: str, finish: str | None, logprobs: dict | None = None
    ) -> dict:
        """The choice object of a chunk: ``text`` as a delta (chat) or as text (completions),
        with the logprobs of its tokens when the request asked for them."""
        if self.chat:
            return {
                "index": index,
                "delta": {"content": text} if text else {},
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}

    def delta(
        self, index: int, text: str, finish: str | None = None, logprobs: dict | None = None
    ) -> str:
        """The event of one choice's next piece of text (and its finish reason, if it ends;
        the logprobs of its tokens, if asked for)."""
        if finish is not None or not text or logprobs is not None:
            return self.event([self.choice(index, text, finish, logprobs)])
        body = self._delta % (index, json.dumps(text, ensure_ascii=False))
        return self._prefix + body + self._suffix
