"""``kubechat up`` for an autoscaled deployment: worker processes follow the autoscaler.

Each step reads what the operator reads in a cluster, from the local lease folder: the workers'
leases (their load) and the demand file the gateway or chat page writes while it holds requests
for the model at zero workers. ``kubechat.autoscale`` decides; this starts worker processes or
retires the least-loaded one (SIGTERM: it drains, finishes its requests, then exits).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .autoscale import AutoscaleState, decide_replicas, observed_load, scalable_plan
from .discovery.demand import LocalDemand, ScalableDeployment
from .discovery.local_store import LocalLeaseStore
from .local_runner import LocalRunner, Process
from .spec import AutoscalingSpec, ModelDeployment


@dataclass
class LocalScaler:
    """Keeps one autoscaled deployment's worker processes at the autoscaler's decision."""

    md: ModelDeployment
    runner: LocalRunner
    host: str
    env: dict[str, str]
    drain_grace: float | None = None
    on_event: Callable[[str], None] = print
    state: AutoscaleState | None = None
    workers: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plan = scalable_plan(self.md)
        leases = self.runner.state_dir / "leases"
        self.leases = LocalLeaseStore(leases)
        self.demand = LocalDemand(leases)
        self.demand.declare(ScalableDeployment("", self.md.name, tuple(self.md.model_names)))

    @property
    def spec(self) -> AutoscalingSpec:
        """The deployment's ``spec.autoscaling``."""
        assert self.md.spec.autoscaling is not None
        return self.md.spec.autoscaling

    def step(self, now: float | None = None) -> None:
        """Decide once and start or retire workers to match."""
        now = time.time() if now is None else now
        self.workers = [p for p in self.workers if p in self.runner.processes and not p.retired]
        records = {r.name: r for r in self.leases.snapshot() if r.deployment == self.md.name}
        decision = decide_replicas(
            self.spec,
            self.state,
            observed_load(records.values(), now),
            now,
            demand=self.demand.demand(self.md.name),
            current=len(self.workers),
        )
        self.state = decision.state
        if decision.reason:
            self.on_event(f"{self.md.name}: {decision.scaled}: {decision.reason}")
        while len(self.workers) < decision.state.desired:
            self._start()
        surplus = len(self.workers) - decision.state.desired
        if surplus > 0:

            def load(p: Process) -> tuple[bool, int]:
                r = records.get(p.name)
                return (p.ready_at is not None, r.in_flight + r.queued if r else 0)

            for p in sorted(self.workers, key=load)[:surplus]:
                self.on_event(f"{p.name}: stopping (scale down); it finishes its requests first")
                self.runner.retire(p)
                self.workers.remove(p)

    def _start(self) -> None:
        # a retired worker keeps its name (and lease) until it has drained: take a free one
        used = {p.name for p in self.runner.processes}
        template = self.plan.workers[0]
        worker = next(
            replace(template, replica=i)
            for i in itertools.count()
            if f"{template.deployment}-{i}" not in used
        )
        proc = self.runner.add_worker(
            worker, host=self.host, env=self.env, drain_grace=self.drain_grace
        )
        proc.start()
        self.workers.append(proc)
        self.on_event(f"{proc.name}: starting")
