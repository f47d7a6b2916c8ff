"""The stream's chunk events are exactly OpenAI chunk objects, rendered the short way or not."""

from __future__ import annotations

import json

import pytest

from kubechat.worker.stream_chunks import StreamChunks

TEXTS = [
    " the",
    'a "quoted" word',
    "line\nbreak\ttab",
    "back\\slash",
    "日本語 🙂",
    "</script>",
    "\x00",
]


def dumped(chunks: StreamChunks, index: int, text: str, finish: str | None, usage: bool) -> str:
    """The chunk rendered the long way: json.dumps of the whole object."""
    body = {
        "id": "chatcmpl-1" if chunks.chat else "cmpl-1",
        "object": "chat.completion.chunk" if chunks.chat else "text_completion",
        "created": 1700000000,
        "model": 'm "1" 模型',
        "choices": [chunks.choice(index, text, finish)],
    }
    if usage:
        body["usage"] = None
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("usage", [True, False])
def test_a_text_delta_is_byte_for_byte_the_chunk_object(chat: bool, usage: bool) -> None:
    chunks = StreamChunks("chatcmpl-1" if chat else "cmpl-1", chat, 1700000000, 'm "1" 模型', usage)
    for index in (0, 3):
        for text in TEXTS:
            assert chunks.delta(index, text) == dumped(chunks, index, text, None, usage)
        # the last piece of a choice (finish reason set, possibly no text)
        assert chunks.delta(index, "end", "length") == dumped(chunks, index, "end", "length", usage)
        assert chunks.delta(index, "", "stop") == dumped(chunks, index, "", "stop", usage)


def test_the_events_parse_as_openai_chunks() -> None:
    chat = StreamChunks("chatcmpl-9", True, 5, "demo", include_usage=True)
    event = json.loads(chat.delta(1, '日本 "x"')[len("data: ") :])
    assert event == {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "demo",
        "choices": [
            {"index": 1, "delta": {"content": '日本 "x"'}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    text = StreamChunks("cmpl-9", False, 5, "demo", include_usage=False)
    event = json.loads(text.delta(0, "hi")[len("data: ") :])
    assert event["object"] == "text_completion"
    assert event["choices"] == [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": None}]
    assert "usage" not in event
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert json.loads(chat.event([], usage)[len("data: ") :])["usage"] == usage


def test_a_choice_opens_with_the_role_or_the_echoed_prompt() -> None:
    chat = StreamChunks("chatcmpl-9", True, 5, "demo", include_usage=False)
    opening = json.loads(chat.opening(2)[len("data: ") :])
    assert opening["choices"] == [
        {
            "index": 2,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    text = StreamChunks("cmpl-9", False, 5, "demo", include_usage=True)
    assert text.opening(0) is None  # nothing to send before the first text without echo
    echoed = json.loads(text.opening(1, "Once upon")[len("data: ") :])
    assert echoed["choices"] == [
        {"index": 1, "text": "Once upon", "logprobs": None, "finish_reason": None}
    ]
    assert echoed["usage"] is None
