"""A worker that is connected but dead (frozen: its sockets stay open, and a stream may be kept
alive by SSE comments) is noticed by its lease: once it expires or its record vanishes, the
gateway ends that worker's requests within about a second: retried elsewhere when nothing was
sent yet, an error event in a stream already under way. A draining worker keeps its streams."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import until

from .harness import BODY, STREAM, Gateway, gateway, record

# the watchdog's interval (1 s) plus slack for a loaded machine
NOTICED_WITHIN = 2.5


def lose_lease(gw: Gateway, name: str, how: str) -> None:
    """Make worker ``name``'s lease lapse (``expired``) or its record disappear (``vanished``)."""
    if how == "vanished":
        gw.store.remove(name)
    else:
        gw.store.publish(record(name, gw.addresses[name], renew_time=time.time() - 60))


@pytest.mark.parametrize("how", ["expired", "vanished"])
def test_a_stream_kept_alive_by_a_dead_worker_ends_with_an_error_event(
    tmp_path: Path, how: str
) -> None:
    with gateway(tmp_path, {"w": "stall"}) as gw:
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=STREAM, timeout=10) as r:
            lines = r.iter_lines()
            first = next(lines)
            assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
            lose_lease(gw, "w", how)
            lost_at = time.monotonic()
            rest = []
            for line in lines:  # keep-alive comments wake this loop up every 0.2 s
                if time.monotonic() - lost_at > 2 * NOTICED_WITHIN:
                    pytest.fail("the stream on the dead worker is still open")
                if line.startswith("data: "):
                    rest.append(line)
            ended_after = time.monotonic() - lost_at
        assert ended_after < NOTICED_WITHIN
        error = json.loads(rest[-2][6:])["error"]
        assert error["code"] == "upstream_failed"
        assert "lease" in error["message"]
        assert rest[-1] == "data: [DONE]"
        assert gw.workers["w"].state.closed.wait(5), "the dead worker's connection was kept"
        assert gw.metric('kubechat_gateway_stream_errors_total{model="m",reason="lease_lost"}') == 1
        until(lambda: gw.router.in_flight() == {}, timeout=5, interval=0.05)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_worker_dies_before_answering_is_retried_elsewhere(
    tmp_path: Path, stream: bool
) -> None:
    with gateway(tmp_path, {"a-dead": "hang"}) as gw:
        answer: dict[str, object] = {}

        def ask() -> None:
            r = httpx.post(
                f"{gw.url}/v1/chat/completions", json={**BODY, "stream": stream}, timeout=10
            )
            answer.update(status=r.status_code, worker=r.headers.get("x-kubechat-worker"))
            answer["text"] = r.text

        client = threading.Thread(target=ask)
        client.start()
        until(lambda: gw.hits("a-dead") == 1, timeout=5, interval=0.05)
        with gateway(tmp_path / "b", {"b-ok": "ok"}) as other:
            gw.store.publish(record("b-ok", other.addresses["b-ok"]))
            lose_lease(gw, "a-dead", "expired")
            lost_at = time.monotonic()
            client.join(10)
            answered_after = time.monotonic() - lost_at
        assert answer["status"] == 200, answer
        assert answer["worker"] == "b-ok"
        assert "from b-ok" in answer["text"] or "b-ok" in answer["text"]
        assert answered_after < NOTICED_WITHIN
        assert gw.retries("lease_lost") == 1


def test_a_draining_worker_keeps_its_streams(tmp_path: Path) -> None:
    with gateway(tmp_path, {"w": "stall"}) as gw:
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=STREAM, timeout=10) as r:
            lines = r.iter_lines()
            next(lines)
            live = gw.store.snapshot()[0]
            gw.store.publish(dataclasses.replace(live, draining=True))
            received = []
            until_ = time.monotonic() + 2.5  # more than two checks of the watchdog
            for line in lines:
                received.append(line)
                if time.monotonic() > until_:
                    break
        assert not any("error" in line for line in received), received
        assert sum(line == ": keep-alive" for line in received) >= 10
