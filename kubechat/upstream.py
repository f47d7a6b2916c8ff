"""Sending a request to a worker, and to another one when the first fails before any byte.

A request is retried on a different worker when the worker refuses or resets the connection,
times out before answering, or answers 429/503, as long as nothing has reached the client yet,
within a bounded number of attempts and a deadline. A non-streamed response is read whole before
anything is sent, so it can always be retried; a stream is committed once its first chunk is in.

A worker that is connected but dead (a frozen process: the kernel keeps its sockets open) may say
nothing for minutes, or keep a stream alive with SSE comments. Its lease is what shows it is
gone: a watchdog checks about once a second whether the worker of each request in flight still
holds its lease (a draining worker does: it finishes what it has) and ends the requests of one
that lost it: retried elsewhere before the first byte, an error event in a stream.

The HTTP client is aiohttp's: relaying a stream is the gateway's hot path, and aiohttp's C parser
and plain asyncio streams cost a fraction of httpx's per-chunk CPU (measured: the gateway's CPU
per relayed chunk, benchmarks/gateway_overhead.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from kubechat.discovery.records import WorkerRecord
from kubechat.openai_errors import OpenAIError, unavailable
from kubechat.sse import DONE_EVENT, error_event

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 503}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
}


class LeaseLost(Exception):
    """The worker serving a request lost its lease (expired, or its record vanished)."""


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, LeaseLost)


@dataclass
class Timeouts:
    """Upstream timeouts, seconds."""

    connect: float = 5.0
    read: float = 300.0  # longest silence of a worker mid-answer


@dataclass
class RetryPolicy:
    """How hard the gateway tries before giving up."""

    attempts: int = 3
    deadline: float = 30.0  # no new attempt starts after this many seconds
    first_chunk_timeout: float = 30.0  # a stream whose first chunk takes longer is retried


@dataclass
class Buffered:
    """A complete upstream answer (non-streamed, or an error before streaming)."""

    status: int
    body: bytes
    headers: dict[str, str]


PickWorker = Callable[[frozenset[str]], WorkerRecord | None]
# Given workers serving requests now, the names of those whose lease no longer holds
# (LiveView.lost).
LeaseCheck = Callable[[list[WorkerRecord]], set[str]]


class UpstreamObserver(Protocol):
    """What a caller may count about upstream calls (the gateway exports it as metrics)."""

    def answered(self, model: str, seconds: float) -> None:
        """A worker answered (headers in) after ``seconds``."""

    def retried(self, model: str, reason: str) -> None:
        """A request goes to another worker after ``reason`` (e.g. ``connect_error``, ``429``)."""

    def stream_failed(self, model: str, reason: str) -> None:
        """A stream already under way broke off (e.g. ``connection_closed``, ``lease_lost``)."""


class NotObserved:
    """An observer that counts nothing."""

    def answered(self, model: str, seconds: float) -> None:
        """Ignored."""

    def retried(self, model: str, reason: str) -> None:
        """Ignored."""

    def stream_failed(self, model: str, reason: str) -> None:
        """Ignored."""


class Upstream:
    """Forwards requests to workers with retries; one shared HTTP connection pool, opened on
    first use in the running event loop (``aclose`` closes it)."""

    def __init__(
        self,
        observer: UpstreamObserver | None = None,
        policy: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        *,
        lease_check: LeaseCheck | None = None,
        lease_check_interval: float = 1.0,
    ) -> None:
        """``lease_check``: how the watchdog finds workers that lost their lease (None: no
        watchdog, a dead-but-connected worker is noticed only by the read timeout)."""
        self.observer = observer or NotObserved()
        self.policy = policy or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self._session: aiohttp.ClientSession | None = None
        self._watchdog = _Watchdog(lease_check, lease_check_interval) if lease_check else None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.timeouts.connect,
                    sock_connect=self.timeouts.connect,
                    sock_read=self.timeouts.read,
                ),
                auto_decompress=False,  # bytes pass through as the worker sent them
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool (and stop the lease watchdog)."""
        if self._watchdog is not None:
            await self._watchdog.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        *,
        model: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        stream: bool,
        pick: PickWorker,
        track: Callable[[WorkerRecord], Callable[[], None]],
    ) -> Buffered | Streaming:
        """Send to the best worker, retrying elsewhere on failure before the first byte.

        ``pick(excluded_names)`` chooses a worker; ``track(worker)`` counts it in flight and
        returns the function that stops counting. The count ends when a complete answer has been
        read, when a returned ``Streaming`` ends or is closed, and on every failure, cancellation
        included.
        """
        deadline = time.monotonic() + self.policy.deadline
        tried: set[str] = set()
        last: Buffered | None = None
        last_reason = "no live worker"
        for attempt in range(self.policy.attempts):
            worker = pick(frozenset(tried))
            if worker is None:
                break
            if attempt:
                self.observer.retried(model, last_reason)
            tried.add(worker.name)
            watch = _Watch(worker)
            release = _once(self._watching(watch, track(worker)))
            try:
                result = await self._attempt(worker, path, body, headers, stream, model, watch)
            except TRANSPORT_ERRORS as exc:
                release()
                last_reason = _reason(exc)
                log.warning(
                    "worker %s failed before answering (%s); trying another",
                    worker.name,
                    last_reason,
                )
                if time.monotonic() >= deadline:
                    break
                continue
            except BaseException:  # cancelled (the client left, the UI's Stop) or a bug
                release()
                raise
            if isinstance(result, Streaming):
                result.own(release)
                return result
            release()
            if result.status in RETRYABLE_STATUS:
                last, last_reason = result, str(result.status)
                if time.monotonic() >= deadline:
                    break
                continue
            return result
        if last is not None:
            return last
        if tried:
            raise OpenAIError(
                502,
                f"no worker could answer for model '{model}' "
                f"({len(tried)} tried, last failure: {last_reason})",
                code="upstream_failed",
                headers={"Retry-After": "1"},
            )
        raise unavailable(f"no live worker serves model '{model}' right now", code="no_live_worker")

    def _watching(self, watch: _Watch, release: Callable[[], None]) -> Callable[[], None]:
        """Put ``watch`` under the lease watchdog; the returned function ends both."""
        if self._watchdog is None:
            return release
        self._watchdog.add(watch)

        def end() -> None:
            self._watchdog.discard(watch)
            release()

        return end

    async def _attempt(
        self,
        worker: WorkerRecord,
        path: str,
        body: bytes,
        headers: dict[str, str],
        stream: bool,
        model: str,
        watch: _Watch,
    ) -> Buffered | Streaming:
        """One try on ``worker``; the response is closed here unless a Streaming is returned
        (the caller gives it the in-flight count to release when it ends)."""
        started = time.perf_counter()
        url = worker.address.rstrip("/") + path
        sending = self._client().post(url, data=body, headers=headers)
        # A stream must show signs of life quickly (headers, then its first chunk); a complete
        # answer may take as long as generation does (bounded by the read timeout).
        budget = self.policy.first_chunk_timeout if stream else None
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(budget) as timer:
                watch.timer = timer  # the watchdog makes it fire at once if the lease is lost
                response = await sending
        except TimeoutError:
            if watch.lost:
                raise LeaseLost(worker.name) from None
            raise
        finally:
            watch.timer = None
        watch.response = response  # from now on the watchdog fails its reads instead
        self.observer.answered(model, time.perf_counter() - started)
        out_headers = _forward_headers(response.headers)
        out_headers["x-kubechat-worker"] = worker.name
        if not stream or response.status != 200:
            complete = False
            try:
                data = await response.read()
                complete = True
            finally:
                _finish(response, complete)
            return Buffered(response.status, data, out_headers)
        try:
            left = max(0.05, self.policy.first_chunk_timeout - (time.monotonic() - t0))
            first = await asyncio.wait_for(response.content.readany(), left)
        except BaseException:
            _finish(response, False)
            raise
        return Streaming(
            response.status, out_headers, first, response, worker.name, model, self.observer
        )


class _Watch:
    """One attempt on a worker, as the lease watchdog sees it."""

    __slots__ = ("lost", "response", "timer", "worker")

    def __init__(self, worker: WorkerRecord) -> None:
        self.worker = worker
        self.lost = False
        self.timer: asyncio.Timeout | None = None  # while waiting for the response headers
        self.response: aiohttp.ClientResponse | None = None  # once they are in

    def lose(self) -> None:
        """End the attempt: its pending wait or read raises (TimeoutError, then LeaseLost)."""
        self.lost = True
        if self.response is not None:
            self.response.content.set_exception(LeaseLost(self.worker.name))
        elif self.timer is not None:
            self.timer.reschedule(asyncio.get_running_loop().time())


class _Watchdog:
    """Every ``interval`` seconds, ends the attempts whose worker lost its lease.

    One task for all requests, woken once per interval: nothing is spent per relayed chunk, and
    a check costs one discovery snapshot, however many requests are in flight.
    """

    def __init__(self, check: LeaseCheck, interval: float) -> None:
        self.check = check
        self.interval = interval
        self._watches: set[_Watch] = set()
        self._task: asyncio.Task | None = None

    def add(self, watch: _Watch) -> None:
        """Watch ``watch`` (starting the watchdog in the running loop if needed)."""
        self._watches.add(watch)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-watch")

    def discard(self, watch: _Watch) -> None:
        """Stop watching ``watch``."""
        self._watches.discard(watch)

    async def stop(self) -> None:
        """Stop the watchdog task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._watches:
                self.sweep()

    def sweep(self) -> None:
        """Check the leases of the workers in use now; end the attempts of those gone."""
        watches = [w for w in self._watches if not w.lost]
        workers = list({(w.worker.name, w.worker.address): w.worker for w in watches}.values())
        try:
            lost = self.check(workers) if workers else set()
        except Exception:  # a discovery hiccup must not end the watchdog
            log.exception("checking the workers' leases failed")
            return
        for w in watches:
            if w.worker.name in lost:
                log.warning("worker %s lost its lease; ending its request", w.worker.name)
                w.lose()


class Streaming:
    """An upstream stream whose first chunk has arrived; ``chunks`` yields it and the rest.

    The stream holds the worker's connection and its in-flight count until it ends: read to the
    end, failed, or closed with ``aclose()``, which the consumer must call (also as ``async with``)
    because a stream may be dropped before it was ever read (a client gone before the response
    started).
    """

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        first: bytes,
        response: aiohttp.ClientResponse,
        worker: str,
        model: str,
        observer: UpstreamObserver,
    ) -> None:
        self.status = status
        self.headers = headers
        self._response = response
        self._release: Callable[[], None] = lambda: None
        self._worker = worker
        self._model = model
        self._observer = observer
        self._ended = False
        self.chunks: AsyncGenerator[bytes, None] = self._relay(first)

    async def _relay(self, first: bytes) -> AsyncGenerator[bytes, None]:
        """Yield the stream; if the worker dies mid-stream, end with an error event, never hang."""
        complete = False
        try:
            chunk = first
            while chunk:
                yield chunk
                chunk = await self._response.content.readany()
            complete = True
        except TRANSPORT_ERRORS as exc:
            log.warning("worker %s failed mid-stream: %s", self._worker, _reason(exc))
            self._observer.stream_failed(self._model, _reason(exc))
            if isinstance(exc, LeaseLost):
                why = "stopped renewing its lease (frozen, cut off or gone)"
            else:
                why = f"failed ({_reason(exc)})"
            yield _error_event(f"the worker serving this stream {why}; the response is incomplete")
        finally:
            self._end(complete)

    def own(self, release: Callable[[], None]) -> None:
        """Call ``release`` when the stream ends (it counts the request in flight)."""
        self._release = release

    def _end(self, complete: bool) -> None:
        if not self._ended:
            self._ended = True
            _finish(self._response, complete)
            self._release()

    async def aclose(self) -> None:
        """End the stream now (idempotent): close the worker's connection unless it was read to
        the end, and stop counting the request."""
        await self.chunks.aclose()
        self._end(False)

    async def __aenter__(self) -> Streaming:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _error_event(message: str) -> bytes:
    """The SSE events that end a broken stream: an OpenAI error object, then ``[DONE]``."""
    err = OpenAIError(502, message, code="upstream_failed")
    return (error_event(err.body()) + DONE_EVENT).encode()


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` callable any number of times, run on the first call only."""
    called = False

    def once() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return once


def _finish(response: aiohttp.ClientResponse, complete: bool) -> None:
    """Give a fully read connection back to the pool; close one cut short, so the worker sees
    its client go away (and stops generating)."""
    if complete:
        response.release()
    else:
        response.close()


def _forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(exc, LeaseLost):
        return "lease_lost"
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return "timeout"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "connection_closed"
    if isinstance(exc, aiohttp.ClientOSError):
        return "read_error"
    return type(exc).__name__
