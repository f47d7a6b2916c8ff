"""Defaults shared by several rooms, written once: the worker's flags, the operator's, the pods it
renders and ``kubechat up`` all take them from here.

The chart's values.yaml repeats the operator's (``workers.drainGrace``, ``leaseRenewInterval``,
``leaseDuration``) and the worker pods' port for its NetworkPolicy: YAML cannot import them, and
tests/chart checks the rendered chart against these.
"""

from __future__ import annotations

# Heartbeat leases: a worker renews its record every LEASE_RENEW_INTERVAL seconds; a record not
# renewed for LEASE_DURATION seconds is stale (no traffic). The duration spans a few renewals, so
# one slow write to the API server does not take a healthy worker out of rotation.
LEASE_RENEW_INTERVAL = 2.0
LEASE_DURATION = 6.0

# Seconds a stopping worker lets admitted requests finish (SIGTERM -> drain -> exit). A whole
# number: worker pods get terminationGracePeriodSeconds = DRAIN_GRACE + a margin.
DRAIN_GRACE = 30

# The port a worker listens on inside its pod (the container port named "http").
WORKER_PORT = 8000

# Sequences one worker serves at once (more get 429). Two values on purpose:
# - ``kubechat worker`` run by hand keeps FastChat's ``--limit-worker-concurrency`` default, so a
#   FastChat command line behaves as it did there;
# - a ModelDeployment (``spec.worker.limitConcurrency``) defaults to a batch the batching engine
#   serves in one decode step per token, sized for a dedicated pod; the operator and
#   ``kubechat up`` always pass the spec's value, so the worker's own default never applies there.
WORKER_LIMIT_CONCURRENCY = 5
DEPLOYMENT_LIMIT_CONCURRENCY = 32
