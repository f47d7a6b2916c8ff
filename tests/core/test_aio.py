"""kubechat.aio.in_own_thread: a result or an exception comes back, and the thread is gone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kubechat.aio import in_own_thread


def test_returns_the_result_from_a_thread_that_then_ends() -> None:
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 42

    assert asyncio.run(in_own_thread(work, name="probe")) == 42
    (thread,) = seen
    assert thread is not threading.main_thread() and thread.name == "probe"
    thread.join(5)
    assert not thread.is_alive()


def test_raises_what_the_function_raised() -> None:
    def fail() -> None:
        raise ValueError("no such checkpoint")

    with pytest.raises(ValueError, match="no such checkpoint"):
        asyncio.run(in_own_thread(fail))
