"""Serving's OpenAI semantics over an engine that emits scripted tokens (no model): the text a
client reads, ``n`` choices, stop strings, usage, streamed chunks, cancellation, failures."""

from __future__ import annotations

import asyncio
import json

import pytest

from kubechat.openai_errors import OpenAIError
from kubechat.openai_protocol import ChatCompletionRequest, CompletionRequest
from kubechat.worker.admission import Admission
from kubechat.worker.metrics import WorkerMetrics
from kubechat.worker.serving import ModelRuntime, Serving
from kubechat.worker.stream_chunks import DONE_EVENT
from kubechat.worker.templates import resolve_template
from tests.support.fake_engine import ScriptedEngine
from tests.support.processes import until_async
from tests.worker.test_templates import build_tokenizer

MODEL = "scripted"
REPLY = "K2 is the second highest mountain in the world, after Everest."
QUESTION = [{"role": "user", "content": "Which mountain is the second highest one in the world?"}]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def reply_ids(tokenizer) -> list[int]:
    return tokenizer.encode(REPLY, add_special_tokens=False)


def serving_over(tokenizer, engine: ScriptedEngine) -> Serving:
    runtime = ModelRuntime(
        names=[MODEL],
        tokenizer=tokenizer,
        template=resolve_template("chatml", tokenizer),
        engine=engine,
        context_length=512,
        eos_token_ids={tokenizer.eos_token_id},
    )
    return Serving(runtime, Admission(8), WorkerMetrics())


def replying(tokenizer, ids: list[int], **engine_options) -> tuple[Serving, ScriptedEngine]:
    """A serving whose engine answers every request with ``ids`` and then the EOS token."""
    engine = ScriptedEngine(lambda request: [*ids, tokenizer.eos_token_id], **engine_options)
    return serving_over(tokenizer, engine), engine


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": MODEL, "messages": QUESTION, **fields})


def events(stream: list[str]) -> list[dict]:
    """The JSON chunks of a stream's ``data:`` events (keep-alives and [DONE] left out)."""
    assert stream[-1] == DONE_EVENT
    return [json.loads(e.removeprefix("data: ")) for e in stream[:-1] if e.startswith("data: {")]


async def test_a_chat_answer_is_the_engines_text_with_usage(tokenizer, reply_ids) -> None:
    serving, engine = replying(tokenizer, reply_ids)
    body = await serving.complete(serving.prepare_chat(chat()))
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": REPLY}
    assert choice["finish_reason"] == "stop"
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    (request,) = engine.requests
    prompt = len(request.prompt_ids)
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": len(reply_ids),  # the EOS token ends the answer, it is not in it
        "total_tokens": prompt + len(reply_ids),
    }
    assert (engine.finished, engine.cancelled, engine.running) == (1, 0, 0)


async def test_n_choices_count_the_prompt_once(tokenizer, reply_ids) -> None:
    serving, engine = replying(tokenizer, reply_ids)
    body = await serving.complete(serving.prepare_chat(chat(n=3, seed=7)))
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {REPLY}
    assert [r.sampling.seed for r in engine.requests] == [7, 8, 9]  # a seed per choice
    prompt = len(engine.requests[0].prompt_ids)
    assert body["usage"]["prompt_tokens"] == prompt
    assert body["usage"]["completion_tokens"] == 3 * len(reply_ids)


async def test_a_stop_string_ends_the_text_and_the_generation(tokenizer, reply_ids) -> None:
    serving, engine = replying(tokenizer, reply_ids)
    body = await serving.complete(serving.prepare_chat(chat(stop=["highest"])))
    (choice,) = body["choices"]
    assert choice["message"]["content"] == "K2 is the second "
    assert choice["finish_reason"] == "stop"
    assert engine.cancelled == 1  # the rest of the script was never asked for
    assert body["usage"]["completion_tokens"] < len(reply_ids)


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(tokenizer, reply_ids) -> None:
    serving, _ = replying(tokenizer, reply_ids)
    body = await serving.complete(serving.prepare_chat(chat(max_tokens=3)))
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == tokenizer.decode(reply_ids[:3])
    assert body["usage"]["completion_tokens"] == 3


async def test_a_stream_carries_the_text_in_deltas_then_usage_then_done(
    tokenizer, reply_ids
) -> None:
    serving, _ = replying(tokenizer, reply_ids)
    job = serving.prepare_chat(chat(stream=True, stream_options={"include_usage": True}))
    chunks = events([e async for e in serving.stream(job)])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == REPLY
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 3
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(reply_ids)


async def test_completions_echo_the_prompt_in_text_and_stream(tokenizer, reply_ids) -> None:
    serving, _ = replying(tokenizer, reply_ids)
    request = {"model": MODEL, "prompt": "Q: second highest? A:", "echo": True}
    body = await serving.complete(serving.prepare_completion(CompletionRequest(**request)))
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Q: second highest? A:" + REPLY
    job = serving.prepare_completion(CompletionRequest(**request, stream=True))
    chunks = events([e async for e in serving.stream(job)])
    assert "".join(c["choices"][0]["text"] for c in chunks) == body["choices"][0]["text"]


async def test_a_cancelled_request_cancels_its_generation(tokenizer, reply_ids) -> None:
    serving, engine = replying(tokenizer, reply_ids, delay=0.05)
    task = asyncio.create_task(serving.complete(serving.prepare_chat(chat(n=2))))
    await until_async(lambda: engine.running == 2, what="both choices generating")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (engine.cancelled, engine.finished, engine.running) == (2, 0, 0)


async def test_a_stream_closed_midway_cancels_its_generation(tokenizer, reply_ids) -> None:
    serving, engine = replying(tokenizer, reply_ids, delay=0.05)
    stream = serving.stream(serving.prepare_chat(chat(stream=True)))
    async for event in stream:
        if '"content": "K' in event:  # the first piece of text: the client goes away
            break
    await stream.aclose()
    assert (engine.cancelled, engine.finished, engine.running) == (1, 0, 0)


async def test_an_engine_failure_is_a_500_or_the_streams_error_event(tokenizer, reply_ids) -> None:
    serving, _ = replying(tokenizer, reply_ids, fail_after=2)
    with pytest.raises(OpenAIError) as failed:
        await serving.complete(serving.prepare_chat(chat()))
    assert (failed.value.status, failed.value.code) == (500, "generation_failed")
    job = serving.prepare_chat(chat(stream=True))
    stream = [e async for e in serving.stream(job)]
    error = events(stream)[-1]["error"]
    assert (error["code"], error["type"]) == ("generation_failed", "internal_error")
    assert "scripted failure" in error["message"]
