"""The chat page's backend and an autoscaled model at zero workers: the model is offered, a
question first shows that the model is starting, writes demand, and the answer follows once a
worker is up; with no worker by the deadline the page gets a readable error."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest

from kubechat.cold_start import ColdStarts
from kubechat.discovery.demand import LocalDemand, ScalableDeployment
from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.ui.backend import STARTING, ChatBackend, ChatError, Params
from tests.gateway.harness import record
from tests.support.stub_workers import serve, stub_app


def backend(
    tmp_path: Path, hold_timeout: float
) -> tuple[ChatBackend, LocalLeaseStore, LocalDemand]:
    leases = tmp_path / "leases"
    store, demand = LocalLeaseStore(leases), LocalDemand(leases)
    demand.declare(ScalableDeployment("", "d", ("m",)))
    view = LiveView(store)
    return ChatBackend(view, cold_starts=ColdStarts(view, demand, hold_timeout)), store, demand


async def replies(chat: ChatBackend) -> list[str]:
    try:
        return [
            r.text async for r in chat.stream("m", [{"role": "user", "content": "hi"}], Params())
        ]
    finally:
        await chat.aclose()


def test_the_page_says_the_model_is_starting_then_answers(tmp_path: Path) -> None:
    chat, store, demand = backend(tmp_path, hold_timeout=30)
    assert chat.models() == ["m"], "an autoscaled model at zero workers is offered"
    stop = threading.Event()

    def start_on_demand() -> None:  # what kubechat up does with the demand file
        with contextlib.ExitStack() as stack:
            while demand.demand("d") is None and not stop.is_set():
                time.sleep(0.05)
            time.sleep(0.5)
            store.publish(record("w", stack.enter_context(serve(stub_app("ok", "w")))))
            stop.wait()

    runner = threading.Thread(target=start_on_demand)
    runner.start()
    try:
        texts = asyncio.run(replies(chat))
    finally:
        stop.set()
        runner.join(10)
    assert texts[0] == STARTING and "starting" in texts[0]
    assert texts[-1] == "from w"


def test_no_worker_by_the_deadline_is_a_readable_error(tmp_path: Path) -> None:
    chat, _, demand = backend(tmp_path, hold_timeout=0.5)
    with pytest.raises(ChatError, match=r"is starting .* no ready worker within 0\.5 s"):
        asyncio.run(replies(chat))
    assert demand.demand("d") is not None
