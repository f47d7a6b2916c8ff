"""Serve a :class:`KubeEmulator` on 127.0.0.1: in the current event loop, or in its own thread.

The thread form is what most tests want: kopf's runners and the synchronous ``kubernetes``
client block their threads, so the API server lives on a loop of its own::

    with running_emulator(crds=["crds/modeldeployment.yaml"]) as (base_url, kubeconfig):
        api = kubernetes_client(kubeconfig)
        run_kubectl(kubeconfig, "get", "md")

The server is aiohttp's own (not ``kmock.Server``): kmock's server patches aiohttp's resolver
globally and must be exited in LIFO order, which concurrent emulators in threads cannot promise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp.web
import kubernetes
import yaml

from tests.support.kube_emulator import KubeEmulator

T = TypeVar("T")


@contextlib.asynccontextmanager
async def serve_emulator(
    emulator: KubeEmulator | None = None, *, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[KubeEmulator, str]]:
    """Serve an emulator (default: a new one) on a free port in this loop; yield it and its URL."""
    emulator = emulator if emulator is not None else KubeEmulator()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    async with emulator:
        # handler_cancellation: a watch whose client went away stops at once.
        runner = aiohttp.web.ServerRunner(
            aiohttp.web.Server(emulator, handler_cancellation=True), shutdown_timeout=1.0
        )
        await runner.setup()
        await aiohttp.web.SockSite(runner, sock).start()
        try:
            yield emulator, f"http://{host}:{port}"
        finally:
            emulator.stop_watches()
            await runner.cleanup()


def write_kubeconfig(path: Path, base_url: str, namespace: str = "default") -> Path:
    """Write a kubeconfig for an insecure (http) server at ``base_url``; return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": base_url}}],
        "users": [{"name": "tester", "user": {"token": "emulator-accepts-anything"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def kubernetes_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """An official (sync) client for this kubeconfig; $KUBECONFIG is never consulted."""
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))


class _Endpoints(NamedTuple):
    base_url: str
    kubeconfig: Path


class RunningEmulator(_Endpoints):
    """``(base_url, kubeconfig)`` of a running emulator, plus a way into its loop."""

    emulator: KubeEmulator
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the emulator's loop (state is touched only there); return it."""

        async def run() -> T:
            return fn(*args)

        return self.wait(run())

    def wait(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Await ``coro`` on the emulator's loop from this thread."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def register_crd(self, source: str | Path | dict[str, Any]) -> list[Any]:
        """Serve a CRD's resources from now on (dict, YAML text or file)."""
        return self.call(self.emulator.register_crd, source)


@contextlib.contextmanager
def running_emulator(
    *,
    crds: Iterable[str | Path | dict[str, Any]] = (),
    namespaces: Iterable[str] = ("default",),
    directory: Path | None = None,
    validate: bool = True,
    garbage_collection: bool = True,
) -> Iterator[RunningEmulator]:
    """Run an emulator on a free 127.0.0.1 port in a background thread with its own loop.

    Yields ``(base_url, kubeconfig_path)`` (a :class:`RunningEmulator`); the kubeconfig is
    written into ``directory`` (a temporary one by default). ``validate=False`` stores custom
    resources that break their CRD's schema (still pruned and defaulted);
    ``garbage_collection=False`` leaves dependents of deleted owners in place. Stops the server
    and joins the thread on exit.
    """
    started: concurrent.futures.Future[RunningEmulator] = concurrent.futures.Future()
    crds, namespaces = list(crds), tuple(namespaces)
    with contextlib.ExitStack() as stack:
        folder = directory or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stop: list[asyncio.Event] = []

        async def serve() -> None:
            stopped = asyncio.Event()
            stop.append(stopped)
            emulator = KubeEmulator(
                namespaces=namespaces, validate=validate, garbage_collection=garbage_collection
            )
            for crd in crds:
                emulator.register_crd(crd)
            async with serve_emulator(emulator) as (_, base_url):
                kubeconfig = write_kubeconfig(folder / "kubeconfig", base_url)
                handle = RunningEmulator(base_url, kubeconfig)
                handle.emulator, handle.loop = emulator, asyncio.get_running_loop()
                started.set_result(handle)
                await stopped.wait()

        def main() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise

        thread = threading.Thread(target=main, name="kube-emulator", daemon=True)
        thread.start()
        handle = started.result(timeout=60)
        try:
            yield handle
        finally:
            handle.loop.call_soon_threadsafe(stop[0].set)
            thread.join(timeout=30)
