"""Tool calls through the gateway with the openai SDK, on a tiny Qwen2-layout checkpoint whose
ChatML template renders tools as Qwen2.5's does (random weights: calls come from the grammar
engine, forced by ``tool_choice``): call, tool result fed back through the template, answer;
streamed and not. A template without tools answers 400 naming ``tools``. The call parser reads
the Hermes/Qwen2.5 and Llama 3.1 formats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from transformers import AutoTokenizer

from kubechat.worker.tool_calls import HERMES, LLAMA3_JSON, ToolCallParser
from tests.support.served_model import ServedModel, served_model
from tests.support.tool_checkpoint import build_tool_checkpoint

NAME = "tiny-qwen-tools"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tool_checkpoint(tmp_path_factory.mktemp("tools"))


@pytest.fixture(scope="module")
def served(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    with served_model(checkpoint, NAME, tmp_path_factory.mktemp("served")) as s:
        yield s


def _valid_calls(calls) -> list[tuple[str, dict]]:
    out = []
    for call in calls:
        assert call.type == "function" and call.id
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


def _streamed(stream) -> tuple[str, list[dict], str | None]:
    """Content, tool calls (assembled from their deltas as the SDK's users do) and finish."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def test_round_trip_with_tool_choice_required(served: ServedModel, checkpoint: Path) -> None:
    client = served.client()
    first = client.chat.completions.create(
        model=NAME, messages=QUESTION, tools=TOOLS, tool_choice="required", temperature=0.8, seed=3
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = _valid_calls(choice.message.tool_calls)
    assert calls
    # the call and its result go back through the checkpoint's template
    messages = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),
        *[
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21})}
            for call in choice.message.tool_calls
        ],
    ]
    answer = client.chat.completions.create(
        model=NAME, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=12
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason in ("stop", "length")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<tool_response>" in rendered
    assert answer.usage.prompt_tokens == len(tokenizer.encode(rendered))


def test_round_trip_streamed(served: ServedModel, checkpoint: Path) -> None:
    client = served.client()
    content, calls, finish = _streamed(
        client.chat.completions.create(
            model=NAME,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice="required",
            seed=5,
            stream=True,
        )
    )
    assert finish == "tool_calls" and content == "" and calls
    for call in calls:
        assert call["id"]
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    assistant = {
        "role": "assistant",
        "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ],
    }  # fmt: skip
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "sunny"} for c in calls]
    text, _, finish = _streamed(
        client.chat.completions.create(
            model=NAME,
            messages=[*QUESTION, assistant, *results],
            tools=TOOLS,
            max_tokens=8,
            temperature=0,
            stream=True,
        )
    )
    assert finish in ("stop", "length", "tool_calls")
    assert finish == "tool_calls" or text  # auto: the answer is text unless it calls again


def test_named_function_and_single_call(served: ServedModel) -> None:
    client = served.client()
    for seed in range(3):
        r = client.chat.completions.create(
            model=NAME,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            parallel_tool_calls=False,
            seed=seed,
        )
        calls = _valid_calls(r.choices[0].message.tool_calls)
        assert [name for name, _ in calls] == ["get_time"]


def test_bad_tool_requests_name_the_parameter(served: ServedModel) -> None:
    url = f"{served.gateway_url}/v1/chat/completions"
    base = {"model": NAME, "messages": QUESTION}
    cases = [
        ({**base, "tools": TOOLS, "tool_choice": {"type": "function",
                                                  "function": {"name": "nope"}}}, "tool_choice"),
        ({**base, "tool_choice": "required"}, "tool_choice"),
    ]  # fmt: skip
    for body, param in cases:
        r = httpx.post(url, json=body, timeout=60)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param


def test_template_without_tools_is_a_400(checkpoint: Path, tmp_path: Path) -> None:
    plain = tmp_path / "no-tools"
    plain.mkdir()
    for f in checkpoint.iterdir():
        (plain / f.name).write_bytes(f.read_bytes())
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] "
        "+ '<|im_end|>\\n' }}{% endfor %}{{ '<|im_start|>assistant\\n' }}"
    )
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with served_model(plain, NAME, tmp_path) as s:
        r = httpx.post(
            f"{s.gateway_url}/v1/chat/completions",
            json={"model": NAME, "messages": QUESTION, "tools": TOOLS, "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "tools"
        # without tools the same model answers
        r = httpx.post(
            f"{s.gateway_url}/v1/chat/completions",
            json={"model": NAME, "messages": QUESTION, "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("fmt", "text", "content", "calls"),
    [
        (HERMES, 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
         "Sure.", [("f", {"a": 1})]),
        (HERMES, '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n<tool_call>\n'
         '{"name": "g", "arguments": {"b": "x"}}\n</tool_call>', None,
         [("f", {}), ("g", {"b": "x"})]),
        (HERMES, "<tool_call>\nnot json\n</tool_call>", "<tool_call>\nnot json\n</tool_call>", []),
        (HERMES, "no calls here", "no calls here", []),
        (LLAMA3_JSON, '{"name": "get_weather", "parameters": {"city": "Oslo"}}', None,
         [("get_weather", {"city": "Oslo"})]),
        (LLAMA3_JSON, '<|python_tag|>{"name": "f", "parameters": {}}; {"name": "g", '
         '"parameters": {"x": 2}}', None, [("f", {}), ("g", {"x": 2})]),
        (LLAMA3_JSON, "It is sunny in Oslo.", "It is sunny in Oslo.", []),
    ],
)  # fmt: skip
def test_parser_formats(fmt: str, text: str, content: str | None, calls: list) -> None:
    got_content, got_calls = ToolCallParser(fmt).split(text)
    assert got_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got_calls] == [
        (name, args) for name, args in calls
    ]
    # fed a character at a time, as a stream arrives, the same calls come out
    parser = ToolCallParser(fmt)
    streamed_calls, streamed_text = [], ""
    for ch in text:
        piece, found = parser.feed(ch)
        streamed_text += piece
        streamed_calls += found
    piece, found = parser.finish()
    streamed_text += piece
    streamed_calls += found
    assert [c["function"]["name"] for c in streamed_calls] == [name for name, _ in calls]
    assert (streamed_text.strip() or None) == content
