"""Tool calls: tools rendered by the checkpoint's own chat template, calls parsed out of the text.

Two formats cover the common templates, told apart by what the template writes:

* ``hermes`` (Qwen2.5, Hermes, and templates in their style): each call is
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, several in a row when parallel;
* ``llama3_json`` (Llama 3.1/3.2): the whole reply is ``{"name": ..., "parameters": {...}}``
  (calls separated by ``;``), optionally after ``<|python_tag|>``.

``tool_choice``: ``none`` renders no tools and parses nothing; ``auto`` renders them and parses
whatever calls the model writes; ``required`` and a named function also force the reply through
the grammar engine into calls of the offered functions (one only without
``parallel_tool_calls``), their arguments matching each function's JSON schema. A template that
cannot render tools answers 400 naming ``tools``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from kubechat.openai_errors import bad_request
from kubechat.openai_protocol import ChatCompletionRequest, ChatMessage, NamedToolChoice

from .grammar import Grammar, GrammarError
from .structured_output import compiler_for

HERMES = "hermes"
LLAMA3_JSON = "llama3_json"
OPEN, CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"


def tool_format(chat_template: Any) -> str | None:
    """The call format a chat template's text shows, or None."""
    sources = chat_template.values() if isinstance(chat_template, dict) else [chat_template]
    text = "".join(s for s in sources if isinstance(s, str))
    if OPEN in text:
        return HERMES
    if PYTHON_TAG in text or '"parameters"' in text:
        return LLAMA3_JSON
    return None


def chat_message(message: ChatMessage) -> dict[str, Any]:
    """A request message as the chat template reads it: role, text, and an assistant's tool
    calls (arguments as objects, as templates expect) or a tool result's call id."""
    out: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": message.text(),
    }
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": _arguments(call)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _arguments(call: Any) -> Any:
    try:
        return json.loads(call.function.arguments or "{}")
    except ValueError:
        return call.function.arguments


@dataclass
class ToolUse:
    """What a chat request's tools mean for this model: what the template renders, the grammar
    that forces calls (if any) and the format replies are parsed in."""

    rendered: list[dict] | None
    format: str | None
    grammar: Grammar | None = None
    _parsers: dict[int, ToolCallParser] = field(default_factory=dict)  # per streamed choice

    def encode(self, template: Any, messages: list[dict]) -> list[int]:
        """The prompt's token ids, with the tools rendered when there are any."""
        if self.rendered:
            return template.encode(messages, tools=self.rendered)
        return template.encode(messages)

    def parser(self) -> ToolCallParser | None:
        """A parser for one choice's text (None: the reply is plain text)."""
        return ToolCallParser(self.format) if self.format else None

    def message(self, text: str) -> tuple[dict[str, Any], bool]:
        """A whole reply as the assistant's message, and whether it calls tools."""
        parser = self.parser()
        if parser is None:
            return {"role": "assistant", "content": text}, False
        content, calls = parser.split(text)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        return message, bool(calls)

    def stream_events(
        self, chunks: Any, index: int, text: str, finish: str | None, logprobs: dict | None
    ) -> list[str]:
        """The SSE events of choice ``index``'s next piece of text (``chunks`` is the stream's
        StreamChunks): content deltas, ``tool_calls`` deltas once a call is complete, and the
        finish (``tool_calls`` when the choice called any)."""
        parser = self._parsers.setdefault(index, ToolCallParser(self.format or HERMES))
        content, calls = parser.feed(text)
        if finish is not None:
            rest, more = parser.finish()
            content, calls = content + rest, calls + more
        events = []
        if content or logprobs is not None:
            events.append(chunks.delta(index, content, None, logprobs))
        if calls:
            deltas = call_deltas(calls, len(parser.calls) - len(calls))
            choice = {"index": index, "delta": {"tool_calls": deltas}}
            events.append(chunks.event([{**choice, "logprobs": None, "finish_reason": None}]))
        if finish is not None:
            events.append(chunks.delta(index, "", "tool_calls" if parser.calls else finish))
        return events


def tool_use(
    req: ChatCompletionRequest, template: Any, tokenizer: Any, stop_ids: set[int]
) -> ToolUse:
    """Check a chat request's tools against the model and plan their use (400 naming ``tools``
    for a template that cannot render them)."""
    if not req.tools or req.tool_choice == "none":
        return ToolUse(None, None)
    if not getattr(template, "supports_tools", False):
        raise bad_request("this model's chat template does not support tools", "tools")
    fmt = tool_format(getattr(tokenizer, "chat_template", None))
    if fmt is None:
        raise bad_request(
            "this model's chat template renders tools, but in a call format kubechat does not "
            "parse (Hermes/Qwen2.5 <tool_call> JSON, Llama 3.1 JSON)",
            "tools",
        )
    rendered = [t.model_dump(exclude_none=True) for t in req.tools]
    use = ToolUse(rendered, fmt)
    forced = req.tool_choice == "required" or isinstance(req.tool_choice, NamedToolChoice)
    if forced:
        if req.response_format is not None and req.response_format.type != "text":
            raise bad_request(
                "a forced tool call leaves no room for response_format", "response_format"
            )
        functions = [t.function for t in req.tools]
        if isinstance(req.tool_choice, NamedToolChoice):
            functions = [f for f in functions if f.name == req.tool_choice.function.name]
        compiler = compiler_for(tokenizer, stop_ids, "tool_choice")
        grammar = _call_grammar(fmt, functions, req.parallel_tool_calls is not False)
        try:
            use.grammar = compiler.lark(grammar)
        except GrammarError as exc:
            raise bad_request(f"the tools' parameters cannot be enforced: {exc}", "tools") from exc
    return use


def _call_grammar(fmt: str, functions: list[Any], parallel: bool) -> str:
    """A Lark grammar (llguidance's dialect) of replies that are only calls of ``functions``."""
    key = "parameters" if fmt == LLAMA3_JSON else "arguments"
    schema = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": f.name},
                    key: f.parameters or {"type": "object"},
                },
                "required": ["name", key],
                "additionalProperties": False,
            }
            for f in functions
        ],
        "x-guidance": {"whitespace_flexible": False},
    }
    body = f"%json {json.dumps(schema)}"
    if fmt == HERMES:
        call = f'"{OPEN}\\n" body "\\n{CLOSE}"'
        repeat = '("\\n" call)*' if parallel else ""
    else:
        call = "body"
        repeat = '(";" call)*' if parallel else ""
    return f"start: call {repeat}\ncall: {call}\nbody: {body}\n"


@dataclass
class ToolCallParser:
    """Splits one choice's text, as it streams, into content and tool calls."""

    format: str
    calls: list[dict] = field(default_factory=list)
    _buffer: str = ""
    _in_call: bool = False
    _held_space: str = ""
    _json_reply: bool | None = None  # llama3_json: whether the reply is a call (None: unknown)

    def feed(self, text: str) -> tuple[str, list[dict]]:
        """The content ready to send and the calls completed by this piece of text."""
        self._buffer += text
        if self.format == HERMES:
            return self._hermes(final=False)
        return self._llama(final=False)

    def finish(self) -> tuple[str, list[dict]]:
        """The rest, once the choice ended (an unfinished call stays text)."""
        if self.format == HERMES:
            return self._hermes(final=True)
        return self._llama(final=True)

    def split(self, text: str) -> tuple[str | None, list[dict]]:
        """A whole reply as (content or None, calls)."""
        content, calls = self.feed(text)
        rest, more = self.finish()
        content = (content + rest).strip()
        return (content or None), calls + more

    def _hermes(self, final: bool) -> tuple[str, list[dict]]:
        content, found = [], []
        while True:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    break
                call = _call(self._buffer[:end])
                if call is None:  # not a call after all: keep the text
                    content.append(OPEN + self._buffer[: end + len(CLOSE)])
                else:
                    found.append(call)
                self._buffer = self._buffer[end + len(CLOSE) :]
                self._in_call = False
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                content.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_call = True
                continue
            keep = 0 if final else _partial_tag(self._buffer)
            content.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        if final and self._in_call:
            content.append(OPEN + self._buffer)
            self._buffer, self._in_call = "", False
        return self._content("".join(content), final), self._numbered(found)

    def _llama(self, final: bool) -> tuple[str, list[dict]]:
        if self._json_reply is None:
            start = self._buffer.lstrip()
            if not start:
                return "", []
            if start.startswith(("{", PYTHON_TAG)):
                self._json_reply = True
            elif PYTHON_TAG.startswith(start) and not final:
                return "", []
            else:
                self._json_reply = False
        if not self._json_reply:
            text, self._buffer = self._buffer, ""
            return text, []
        if not final:
            return "", []
        text, self._buffer = self._buffer, ""
        body = text.strip().removeprefix(PYTHON_TAG).strip()
        calls = [_call(part) for part in body.split(";")] if body else []
        if not calls or any(c is None for c in calls):
            return text, []
        return "", self._numbered(calls)

    def _content(self, text: str, final: bool) -> str:
        """Whitespace between calls is no content: it is held until text follows it."""
        text = self._held_space + text
        self._held_space = ""
        if text.strip():
            return text
        if final and not self.calls:
            return text
        self._held_space = "" if final else text
        return ""

    def _numbered(self, calls: list[dict]) -> list[dict]:
        self.calls.extend(calls)
        return calls


def _call(text: str) -> dict | None:
    """A tool call from its JSON (``arguments`` or Llama's ``parameters``), or None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    args = data.get("arguments", data.get("parameters", {}))
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": data["name"],
            "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
        },
    }


def _partial_tag(text: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``<tool_call>``."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0


def call_deltas(calls: list[dict], first_index: int) -> list[dict]:
    """Calls as streamed ``tool_calls`` deltas, numbered from ``first_index``."""
    return [{"index": first_index + i, **call} for i, call in enumerate(calls)]
