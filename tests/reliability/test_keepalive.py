"""SSE keep-alive comments on streams that wait (a busy serial engine runs one at a time).

The worker's real serving path on the demo model, in process: a serial engine with room for one
sequence, so a second stream waits silently until the first one is done.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubechat.openai_protocol import ChatCompletionRequest
from kubechat.worker.admission import Admission
from kubechat.worker.loading import LoadOptions
from kubechat.worker.metrics import WorkerMetrics
from kubechat.worker.runtime import RuntimeOptions, build_runtime
from kubechat.worker.serving import Serving, _SilenceWatch
from kubechat.worker.stream_chunks import DONE_EVENT, KEEPALIVE

DEMO = "kubechat-demo"


@pytest.fixture(scope="module")
async def serving(demo_model_dir: Path) -> AsyncIterator[Serving]:
    """Serving over a serial engine that runs one sequence at a time."""
    options = RuntimeOptions(
        load=LoadOptions(model_path=str(demo_model_dir), device="cpu", trust_remote_code=True),
        model_names=[DEMO],
        limit_concurrency=1,
        engine="serial",
    )
    runtime = await asyncio.to_thread(build_runtime, options)
    await runtime.engine.start()
    try:
        yield Serving(runtime, Admission(4), WorkerMetrics())
    finally:
        await runtime.engine.stop()


def _job(serving: Serving, max_tokens: int):
    request = ChatCompletionRequest(
        model=DEMO,
        messages=[{"role": "user", "content": "Which mountain is the highest one?"}],
        max_tokens=max_tokens,
        temperature=0,
        ignore_eos=True,
        stream=True,
    )
    return serving.prepare_chat(request)


async def _timed(events: AsyncIterator[str]) -> list[tuple[str, float]]:
    return [(event, time.monotonic()) async for event in events]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_waiting_stream_gets_comments_then_its_events_unchanged(serving: Serving) -> None:
    every = 0.05
    busy = asyncio.create_task(_timed(serving.stream(_job(serving, 400))))
    await asyncio.sleep(0.05)  # the first stream holds the engine's only slot
    started = time.monotonic()
    waiting = await _timed(serving.stream(_job(serving, 8), keepalive_seconds=every))
    first = await busy

    events = [e for e, _ in waiting]
    content = [e for e in events if e != KEEPALIVE]
    assert KEEPALIVE.startswith(":")  # an SSE comment: clients skip it
    # the comments came while it waited, about one per `every`, and none after its first token
    first_token = next(i for i, e in enumerate(events) if '"content": "' in e and '""' not in e)
    waited = waiting[first_token][1] - started
    assert waited > 4 * every, f"the second stream did not wait ({waited:.3f} s)"
    assert int(waited / every) - 2 <= events.count(KEEPALIVE) <= int(waited / every) + 1
    assert KEEPALIVE not in events[first_token:]
    # the events themselves are those of a stream without comments: role chunk, 8 tokens, end
    chunks = [json.loads(e[6:]) for e in content if e != DONE_EVENT]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert content[-1] == DONE_EVENT
    # and the busy stream, which never waited, got none
    assert KEEPALIVE not in [e for e, _ in first]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_stream_that_never_waits_gets_none_and_its_timer_goes_with_it(
    serving: Serving,
) -> None:
    events = [e async for e in serving.stream(_job(serving, 4), keepalive_seconds=5.0)]
    assert events[-1] == DONE_EVENT
    assert KEEPALIVE not in events
    # a stream that ended, however briefly it waited, leaves no timer re-arming itself behind
    waited = [e async for e in serving.stream(_job(serving, 4), keepalive_seconds=0.01)]
    assert waited[-1] == DONE_EVENT
    await asyncio.sleep(0.05)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is _SilenceWatch]
