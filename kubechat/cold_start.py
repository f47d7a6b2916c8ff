"""Holding requests for an autoscaled model while its first worker starts (scale from zero).

A request for a model of an autoscaled deployment with no live worker waits here, up to
``hold_timeout`` seconds, instead of getting 503 at once. While requests wait, demand is renewed
through the deployment's demand store every ``renew`` seconds (the operator or ``kubechat up``
starts a worker on it); once discovery shows a live worker the requests go on as any other, so
a stream shows the client nothing but the wait. At the deadline: 503 with Retry-After.

Used alike by the gateway and the chat page (which says that the model is starting).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from .discovery.demand import Demand, ScalableDeployment
from .discovery.live import LiveView
from .openai_errors import unavailable

log = logging.getLogger(__name__)

HOLD_TIMEOUT = 300.0  # seconds; the gateway's --hold-timeout and the chat page's default


class ColdStartObserver(Protocol):
    """What a caller may count about held requests (the gateway exports it as metrics)."""

    def held(self, model: str, change: int) -> None:
        """``change`` requests (+1 or -1) started or stopped waiting for ``model``."""

    def started(self, model: str, seconds: float) -> None:
        """``model`` got a live worker ``seconds`` after its first request was held."""

    def timed_out(self, model: str) -> None:
        """A held request for ``model`` reached its deadline."""


class _NotObserved:
    def held(self, model: str, change: int) -> None:
        """Ignored."""

    def started(self, model: str, seconds: float) -> None:
        """Ignored."""

    def timed_out(self, model: str) -> None:
        """Ignored."""


class ColdStarts:
    """Holds requests for autoscaled models at zero workers until one is live."""

    def __init__(
        self,
        view: LiveView,
        demand: Demand | None,
        hold_timeout: float,
        observer: ColdStartObserver | None = None,
        *,
        poll: float = 0.2,
        renew: float = 2.0,
    ) -> None:
        self.view = view
        self.demand = demand
        self.hold_timeout = hold_timeout
        self.observer = observer or _NotObserved()
        self.poll = poll  # how often a held request looks for a live worker
        self.renew = renew
        self._since: dict[str, float] = {}  # model -> when its first waiting request came
        self._waiting: dict[str, int] = {}  # model -> requests held now
        self._signalled: dict[tuple[str, str], float] = {}  # deployment -> last demand sent

    def deployment_for(self, model: str) -> ScalableDeployment | None:
        """The autoscaled deployment serving ``model`` (its requests may be held), if any."""
        if self.demand is None or self.hold_timeout <= 0:
            return None
        return self.demand.deployment_for(model)

    def models(self) -> list[str]:
        """The models whose requests may be held (those of autoscaled deployments), sorted."""
        if self.demand is None or self.hold_timeout <= 0:
            return []
        return self.demand.models()

    def starting(self, model: str) -> bool:
        """Whether a request for ``model`` now would wait for a worker to start."""
        return not self.view.workers(model) and self.deployment_for(model) is not None

    async def wait(self, model: str) -> bool:
        """Return once ``model`` has a live worker: at once (False) when it has one or is not
        autoscaled, else after holding (True). Raises a 503 OpenAIError at the deadline."""
        if self.view.workers(model):
            return False
        deployment = self.deployment_for(model)
        if deployment is None:
            return False
        start = time.monotonic()
        deadline = start + self.hold_timeout
        self._since.setdefault(model, start)
        self._waiting[model] = self._waiting.get(model, 0) + 1
        self.observer.held(model, 1)
        try:
            while True:
                if self.view.workers(model):
                    since = self._since.pop(model, None)
                    if since is not None:
                        self.observer.started(model, time.monotonic() - since)
                    return True
                now = time.monotonic()
                if now >= deadline:
                    self.observer.timed_out(model)
                    raise unavailable(
                        f"model '{model}' is starting (scaled to zero) and had no ready worker "
                        f"within {self.hold_timeout:g} s; try again shortly",
                        retry_after=5,
                        code="model_starting",
                    )
                await self._signal(deployment, now)
                await asyncio.sleep(min(self.poll, max(0.0, deadline - now)))
        finally:
            self.observer.held(model, -1)
            self._waiting[model] -= 1
            if not self._waiting[model]:  # nobody waits: the next one starts a new cold start
                del self._waiting[model]
                self._since.pop(model, None)

    async def _signal(self, deployment: ScalableDeployment, now: float) -> None:
        """Renew the demand for ``deployment`` at most once per ``renew`` seconds."""
        key = (deployment.namespace, deployment.name)
        if now - self._signalled.get(key, -1e9) < self.renew:
            return
        self._signalled[key] = now
        assert self.demand is not None
        try:
            await self.demand.want(deployment)
        except Exception as exc:  # the API is down: keep holding, try again at the next renewal
            log.warning("could not signal demand for %s: %r", deployment.name, exc)
