"""The router's in-flight count is given back on every path a request can end by: the client
leaving before the worker's headers (non-streamed or streamed), a stream never read, a send
cancelled while it waits. A count left behind would steer least-in-flight routing away from a
worker for good."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.routing import Router
from kubechat.upstream import Streaming, Upstream
from tests.support.processes import until
from tests.support.stub_workers import serve, stub_app

from .harness import BODY, STREAM, gateway, record


def test_a_client_leaving_before_the_headers_of_a_complete_answer_frees_the_worker(
    tmp_path: Path,
) -> None:
    with gateway(tmp_path, {"w": "hang"}) as gw:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gw.url}/v1/chat/completions", json=BODY, timeout=0.5)
        assert gw.hits("w") == 1
        until(lambda: gw.in_flight("w") == 0, timeout=5, interval=0.05)
        assert gw.router.in_flight() == {}


def test_a_client_leaving_a_stream_before_the_headers_frees_the_worker(tmp_path: Path) -> None:
    with gateway(tmp_path, {"w": "slow_headers"}) as gw:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gw.url}/v1/chat/completions", json=STREAM, timeout=0.2)
        # the worker answers after 0.5 s, to a gateway whose client is gone: the stream is
        # never relayed, and the worker's connection must still be closed and its count freed
        assert gw.workers["w"].state.closed.wait(5), "the worker's stream was left open"
        until(lambda: gw.in_flight("w") == 0, timeout=5, interval=0.05)
        assert gw.router.in_flight() == {}


async def _send(upstream: Upstream, router: Router, stream: bool) -> object:
    return await upstream.send(
        model="m",
        path="/v1/chat/completions",
        body=json.dumps({**BODY, "stream": stream}).encode(),
        headers={"content-type": "application/json"},
        stream=stream,
        pick=lambda tried: router.pick("m", tried),
        track=lambda worker: router.track(worker).release,
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_send_cancelled_while_waiting_for_headers_is_not_counted(
    tmp_path: Path, stream: bool
) -> None:
    store = LocalLeaseStore(tmp_path)
    router = Router(LiveView(store))
    upstream = Upstream()
    with serve(stub_app("hang", "w")) as url:
        store.publish(record("w", url))
        try:
            task = asyncio.create_task(_send(upstream, router, stream))
            await asyncio.sleep(0.3)
            assert router.in_flight() == {"w": 1}
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert router.in_flight() == {}
        finally:
            await upstream.aclose()


async def test_a_stream_closed_unread_frees_the_worker_and_its_connection(tmp_path: Path) -> None:
    store = LocalLeaseStore(tmp_path)
    router = Router(LiveView(store))
    upstream = Upstream()
    app = stub_app("endless", "w")
    with serve(app) as url:
        store.publish(record("w", url))
        try:
            result = await _send(upstream, router, stream=True)
            assert isinstance(result, Streaming)
            assert router.in_flight() == {"w": 1}
            await result.aclose()
            assert router.in_flight() == {}
            assert await asyncio.to_thread(app.state.closed.wait, 5)
        finally:
            await upstream.aclose()
