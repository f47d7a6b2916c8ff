"""A model's one background thread and the queue of jobs it takes, one at a time.

The serial engine and the embedding runner each run their model on such a thread: jobs are put
on a queue from the event loop, the thread takes them in order and skips those cancelled while
they waited; ``stop`` lets the current job finish.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Cancellable(Protocol):
    """A queued job: its ``cancelled`` event is set when its caller no longer wants it."""

    cancelled: threading.Event


J = TypeVar("J", bound=Cancellable)


class ModelThread(Generic[J]):
    """One daemon thread named ``name`` that calls ``run`` on each queued job not cancelled."""

    def __init__(self, name: str, run: Callable[[J], None]) -> None:
        self._name = name
        self._run = run
        self._jobs: queue.Queue[J | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, job: J) -> None:
        """Queue ``job`` behind the others."""
        self._jobs.put(job)

    def queued(self) -> int:
        """How many jobs wait (cancelled ones included until the thread reaches them)."""
        return self._jobs.qsize()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Stop the thread after the current job (waiting at most 10 s for it)."""
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            self._run(job)
