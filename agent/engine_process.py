"""The engine server as the agent's child, in local mode (``kubechat up``).

In a pod the engine is a container of its own and the kubelet runs it. Locally the agent starts
it, so the pair is one supervised process: the engine gets its own process group (a signal the
runner sends the agent is not also delivered to the engine: the agent decides when the engine
stops, after draining) and dies with the agent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

from kubechat.local_runner import _die_with_parent


class EngineProcess:
    """One engine server process; its output goes to the agent's own stdout and stderr."""

    def __init__(self, argv: Sequence[str], cwd: str | None = None) -> None:
        if not argv:
            raise ValueError("no engine command given")
        self.argv = list(argv)
        self.cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the engine."""
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        """The engine's process id once started."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """None while the engine runs, else its exit code."""
        return None if self._proc is None else self._proc.returncode

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the engine's process group (its own helpers included)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM the engine, wait up to ``timeout`` s, then SIGKILL it; its exit code."""
        if self._proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self._proc.wait()
        # helpers the engine left behind in its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        return self._proc.returncode

    async def wait(self) -> int:
        """Wait for the engine to exit; its exit code."""
        assert self._proc is not None
        return await self._proc.wait()
