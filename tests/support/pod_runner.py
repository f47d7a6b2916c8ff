"""The test kubelet: turns Pods in the (emulated) API into local processes and reports on them.

For each new Pod of its namespace, :class:`PodRunner` binds it (``spec.nodeName``), starts its
first container's ``command + args`` as a local process in its own process group, and keeps
``status`` up to date as a kubelet would: phase, ``podIP`` 127.0.0.1, ``hostIP``, container
state and restart count, and the Ready condition from the readiness probe (``httpGet`` on the
pod's local port; ``tcpSocket`` by connecting; no probe: ready while running).

Every pod gets its own free local port, passed as ``$KUBECHAT_PORT`` and written over a
``--port N`` / ``--port=N`` argument. A process that exits is restarted with a short backoff
under ``restartPolicy: Always`` (and ``OnFailure`` for non-zero codes); otherwise the pod ends
Succeeded or Failed. A pod that is deleted (or gets a deletionTimestamp) has its process group
sent SIGTERM, then SIGKILL after the grace period, and is then deleted with grace 0.

With ``gpus=N`` the node has N ``nvidia.com/gpu``: a pod whose container asks for more is left
unbound and Pending with ``PodScheduled`` False (``Unschedulable``), as the scheduler leaves it;
by default GPU requests are ignored.

A container's ``terminationMessagePath`` (default ``/dev/termination-log``) is a fresh empty
file of its own at every start, written over that path in args and env values as a mount would
be; when the process exits, the file's content (at most 4096 bytes) becomes
``lastState.terminated.message``, or with ``terminationMessagePolicy: FallbackToLogsOnError``,
when the file is empty and the exit code is not 0, the log's last 80 lines (at most 2048 bytes).

Differences from a kubelet: only the first container runs; images are ignored (``python`` in a
command means this interpreter); volumes are not mounted (``path_map`` rewrites path prefixes
in args and env values instead); liveness probes and init containers are ignored.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes

from tests.support.processes import free_port

log = logging.getLogger(__name__)
LOCAL_IP = "127.0.0.1"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # the kubelet's default
MESSAGE_BYTES, TAIL_LINES, TAIL_BYTES = 4096, 80, 2048  # what the kubelet keeps


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Container:
    """One pod's process and what the kubelet knows about it."""

    def __init__(self, pod: dict[str, Any], port: int, log_path: Path) -> None:
        self.pod = pod  # as first seen: what env resolution reads on every (re)start
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.spec = pod["spec"]
        self.start_time = _now()
        self.container = self.spec["containers"][0]
        self.port, self.log_path = port, log_path
        self.message_path = log_path.with_suffix(".termination-log")  # terminationMessagePath
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = ""
        self.restarts = 0
        self.ready = False
        self.last_exit: dict[str, Any] | None = None
        self.restart_due: float | None = None
        self.finished = False  # terminal: no restart will follow
        self.terminating = False
        self.last_status: dict[str, Any] | None = None


class PodRunner:
    """Run the Pods of one namespace as local processes; use as a context manager or start/stop.

    ``api`` is the API server: a base URL, an official ``ApiClient``, or the path of a kubeconfig
    (then also given to every pod as ``$KUBECONFIG``, standing in for in-cluster credentials).
    """

    def __init__(
        self,
        api: str | Path | kubernetes.client.ApiClient,
        namespace: str = "default",
        *,
        extra_env: Mapping[str, str] | None = None,
        path_map: Mapping[str, str] | None = None,
        node_name: str = "local-node",
        log_dir: Path | None = None,
        relist_seconds: float = 5.0,
        probe_interval: float = 0.3,
        restart_backoff: float = 0.5,
        stop_grace: float = 5.0,
        gpus: int | None = None,
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.gpus = gpus
        self._unschedulable: set[str] = set()  # pod uids already reported as such
        if isinstance(api, Path):  # a kubeconfig: the pods get it too, as their credentials
            self.extra_env.setdefault("KUBECONFIG", str(api))
            api = kubernetes.config.new_client_from_config(config_file=str(api))
        elif isinstance(api, str):
            api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=api))
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.path_map = dict(path_map or {})
        self.node_name = node_name
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pod-runner-"))
        self.relist_seconds, self.probe_interval = relist_seconds, probe_interval
        self.restart_backoff, self.stop_grace = restart_backoff, stop_grace
        self._containers: dict[str, _Container] = {}  # by pod uid
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch_response: Any = None  # the open watch, shut down by stop()

    # --- public ---------------------------------------------------------------------------------

    def start(self) -> PodRunner:
        """Start watching pods and supervising processes (background threads)."""
        for target, name in ((self._watch_loop, "watch"), (self._supervise_loop, "supervise")):
            thread = threading.Thread(target=target, name=f"pod-runner-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop every process this runner started (no orphans) and its threads."""
        with self._lock:
            self._stopped.set()
            containers = list(self._containers.values())
            if self._watch_response is not None:
                self._watch_response.shutdown()  # unblocks the watch thread's read
        killers = [
            threading.Thread(target=self._kill, args=(container, self.stop_grace))
            for container in containers
        ]
        for killer in killers:
            killer.start()
        for killer in killers:
            killer.join()
        for thread in self._threads:
            thread.join(timeout=self.relist_seconds + 5)

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def processes(self) -> dict[str, int]:
        """Pod name -> pid of its running process."""
        with self._lock:
            return {
                c.name: c.process.pid
                for c in self._containers.values()
                if c.process is not None and c.process.poll() is None
            }

    def port_of(self, pod_name: str) -> int | None:
        """The local port given to a pod (None if the runner does not run it)."""
        with self._lock:
            return next((c.port for c in self._containers.values() if c.name == pod_name), None)

    def logs(self, pod_name: str) -> str:
        """Everything the pod's process wrote to stdout and stderr (all restarts)."""
        path = self.log_dir / f"{self.namespace}_{pod_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- watching -------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self._watch_once(self._relist())
            except Exception:  # the API may be gone for a moment; re-list and carry on
                if not self._stopped.is_set():
                    log.exception("pod runner watch failed; re-listing")
                    self._stopped.wait(1.0)

    def _watch_once(self, version: str) -> None:
        """Follow pod events from ``version`` until the server ends the watch (or stop())."""
        response = self.core.list_namespaced_pod(
            self.namespace,
            watch=True,
            resource_version=version,
            timeout_seconds=max(int(self.relist_seconds), 1),
            _preload_content=False,
        )
        with self._lock:
            if self._stopped.is_set():
                response.release_conn()
                return
            self._watch_response = response
        try:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._on_pod(event["object"], deleted=event["type"] == "DELETED")
        finally:
            with self._lock:
                self._watch_response = None
            response.release_conn()

    def _relist(self) -> str:
        response = self.core.list_namespaced_pod(self.namespace, _preload_content=False)
        listing = json.loads(response.data)
        alive = set()
        for pod in listing["items"]:
            alive.add(pod["metadata"]["uid"])
            self._on_pod(pod, deleted=False)
        with self._lock:
            missing = [c for uid, c in self._containers.items() if uid not in alive]
        for container in missing:  # a DELETED event we never saw
            self._terminate_async(container, confirm=False)
        return listing["metadata"]["resourceVersion"]

    def _on_pod(self, pod: dict[str, Any], *, deleted: bool) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if self._stopped.is_set():
                return
            container = self._containers.get(uid)
            if deleted or pod["metadata"].get("deletionTimestamp"):
                if container is not None:
                    self._terminate_async(container, confirm=not deleted, pod=pod)
                elif not deleted and pod["spec"].get("nodeName") == self.node_name:
                    self._confirm_deleted(pod["metadata"]["name"])
                return
            if container is not None or not self._is_mine(pod):
                return
            if not self._fits(pod):
                self._report_unschedulable(pod)
                return
            container = _Container(pod, free_port(), self._log_path(pod["metadata"]["name"]))
            self._containers[uid] = container
        self._bind(container)
        self._launch(container, pod)
        self._report(container)

    def _is_mine(self, pod: dict[str, Any]) -> bool:
        node = pod["spec"].get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        return node in (None, "", self.node_name) and phase not in ("Succeeded", "Failed")

    def _fits(self, pod: dict[str, Any]) -> bool:
        """Whether the node has the GPUs the pod's first container asks for."""
        resources = pod["spec"]["containers"][0].get("resources") or {}
        wanted = resources.get("limits") or resources.get("requests") or {}
        return self.gpus is None or int(wanted.get("nvidia.com/gpu", 0)) <= self.gpus

    def _report_unschedulable(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._unschedulable:
            return
        self._unschedulable.add(uid)
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu "
            f"(the node has {self.gpus}).",
            "lastTransitionTime": _now(),
        }
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.patch_namespaced_pod_status(
                pod["metadata"]["name"],
                self.namespace,
                {"status": {"phase": "Pending", "conditions": [condition]}},
            )

    def _log_path(self, pod_name: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{self.namespace}_{pod_name}.log"

    # --- processes ------------------------------------------------------------------------------

    def _bind(self, container: _Container) -> None:
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.patch_namespaced_pod(
                container.name,
                self.namespace,
                {"spec": {"nodeName": self.node_name}},
                _content_type="application/merge-patch+json",
            )

    def _launch(self, container: _Container, pod: dict[str, Any]) -> None:
        spec = container.container
        env = self._environment(container, pod)
        argv = [
            _expand(part, env) for part in (spec.get("command") or []) + (spec.get("args") or [])
        ]
        argv = self._rewrite(_with_port(argv, container.port), container)
        container.message_path.write_bytes(b"")  # a new container's own, empty file
        if not argv:
            container.finished = True
            container.last_exit = {"exitCode": 128, "reason": "NoCommand", "finishedAt": _now()}
            return
        if argv[0] in ("python", "python3") or argv[0].startswith("python3."):
            argv[0] = sys.executable
        workdir = spec.get("workingDir")
        with open(container.log_path, "ab") as output, self._lock:
            if self._stopped.is_set() or container.terminating:
                return  # never start anything stop() or a deletion would not see
            try:
                container.process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=workdir if workdir and Path(workdir).is_dir() else None,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: killpg reaches its children
                )
            except OSError as exc:
                output.write(f"pod-runner: cannot start {argv!r}: {exc}\n".encode())
                container.finished = True
                container.last_exit = {
                    "exitCode": 127,
                    "reason": "StartError",
                    "finishedAt": _now(),
                }
                return
        container.started_at, container.ready = _now(), False

    def _termination_message(self, container: _Container, exit_code: int) -> str:
        """The termination message of the run that just ended, as the kubelet makes it."""
        text = container.message_path.read_bytes()[:MESSAGE_BYTES].decode(errors="replace")
        fallback = container.container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        if text or not fallback or exit_code == 0 or not container.log_path.exists():
            return text
        lines = container.log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        return "\n".join(lines).encode()[-TAIL_BYTES:].decode(errors="ignore")

    def _environment(self, container: _Container, pod: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ) | self.extra_env
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"],
            "metadata.uid": pod["metadata"]["uid"],
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": LOCAL_IP,
            "status.hostIP": LOCAL_IP,
        }
        labels = pod["metadata"].get("labels") or {}
        for item in container.container.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(str(item["value"]), env)
                continue
            path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
            label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            if path in fields:
                env[item["name"]] = fields[path]
            elif label:
                env[item["name"]] = labels.get(label.group(1), "")
            else:
                log.warning("pod %s: env %s not resolved (%s)", container.name, item["name"], item)
        env["KUBECHAT_PORT"] = str(container.port)
        return {key: self._rewrite([value], container)[0] for key, value in env.items()}

    def _rewrite(self, values: list[str], container: _Container) -> list[str]:
        """Map container paths (e.g. /models) to local folders, as a volume mount would, and
        the container's termination-message path to its file."""
        message = container.container.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH
        mounts = {**self.path_map, message: str(container.message_path)}
        result = []
        for value in values:
            for prefix, local in mounts.items():
                if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
                    value = local + value[len(prefix) :]
                    break
            result.append(value)
        return result

    def _kill(self, container: _Container, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace``; leftover children go too."""
        process = container.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(grace, 0.1))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the group outlives its leader sometimes
        process.wait()

    def _terminate_async(
        self, container: _Container, *, confirm: bool, pod: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            if container.terminating:
                return
            container.terminating = True
        meta = (pod or {}).get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = container.spec.get("terminationGracePeriodSeconds", 30)

        def terminate() -> None:
            self._kill(container, float(grace))
            with self._lock:
                self._containers.pop(container.uid, None)
            if confirm:
                self._confirm_deleted(container.name)

        threading.Thread(target=terminate, name=f"pod-runner-stop-{container.name}").start()

    def _confirm_deleted(self, name: str) -> None:
        """The kubelet's final word: the containers are gone, remove the pod object."""
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)

    # --- supervision ----------------------------------------------------------------------------

    def _supervise_loop(self) -> None:
        while not self._stopped.wait(self.probe_interval):
            with self._lock:
                containers = [c for c in self._containers.values() if not c.terminating]
            for container in containers:
                try:
                    self._supervise(container)
                except Exception:
                    log.exception("pod runner: supervising %s failed", container.name)

    def _supervise(self, container: _Container) -> None:
        process = container.process
        if process is not None and process.poll() is not None and container.restart_due is None:
            code = process.returncode
            exit_code = 128 - code if code < 0 else code
            container.last_exit = {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": container.started_at,
                "finishedAt": _now(),
            }
            if message := self._termination_message(container, exit_code):
                container.last_exit["message"] = message
            container.ready = False
            policy = container.spec.get("restartPolicy", "Always")
            if policy == "Always" or (policy == "OnFailure" and exit_code != 0):
                delay = min(self.restart_backoff * 2**container.restarts, 10.0)
                container.restart_due = time.monotonic() + delay
            else:
                container.finished = True
        if container.restart_due is not None and time.monotonic() >= container.restart_due:
            with self._lock:
                if container.terminating or self._stopped.is_set():
                    return
                container.restart_due = None
                container.restarts += 1
            self._launch(container, container.pod)
        if container.process is not None and container.process.poll() is None:
            container.ready = self._probe(container)
        self._report(container)

    def _probe(self, container: _Container) -> bool:
        probe = container.container.get("readinessProbe") or {}
        if "httpGet" in probe:
            path = probe["httpGet"].get("path", "/")
            url = f"http://{LOCAL_IP}:{container.port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    return 200 <= response.status < 400
            except (urllib.error.URLError, OSError, ValueError):
                return False
        if "tcpSocket" in probe:
            try:
                with socket.create_connection((LOCAL_IP, container.port), timeout=1.0):
                    return True
            except OSError:
                return False
        return True

    # --- status ---------------------------------------------------------------------------------

    def _report(self, container: _Container) -> None:
        status = self._status(container)
        if status == container.last_status:
            return
        try:
            self.core.patch_namespaced_pod_status(
                container.name,
                self.namespace,
                {"status": status},
                _content_type="application/merge-patch+json",
            )
            container.last_status = status
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                log.warning("pod runner: status of %s not patched: %s", container.name, exc)

    def _status(self, container: _Container) -> dict[str, Any]:
        running = container.process is not None and container.process.poll() is None
        if running:
            state: dict[str, Any] = {"running": {"startedAt": container.started_at}}
        elif container.finished and container.last_exit is not None:
            state = {"terminated": container.last_exit}
        else:
            state = {
                "waiting": {"reason": "CrashLoopBackOff" if container.restarts else "Starting"}
            }
        if container.finished and container.last_exit is not None:
            phase = "Succeeded" if container.last_exit["exitCode"] == 0 else "Failed"
        else:
            phase = "Running"
        ready = "True" if running and container.ready else "False"
        container_status: dict[str, Any] = {
            "name": container.container["name"],
            "image": container.container.get("image", ""),
            "imageID": "",
            "containerID": f"local://{container.process.pid}" if container.process else "",
            "ready": ready == "True",
            "started": running,
            "restartCount": container.restarts,
            "state": state,
        }
        if container.last_exit is not None and not container.finished:
            container_status["lastState"] = {"terminated": container.last_exit}
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ]
        return {
            "phase": phase,
            "hostIP": LOCAL_IP,
            "hostIPs": [{"ip": LOCAL_IP}],
            "podIP": LOCAL_IP,
            "podIPs": [{"ip": LOCAL_IP}],
            "startTime": container.start_time,
            "conditions": conditions,
            "containerStatuses": [container_status],
        }


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in commands, args and env values."""
    return _VAR_REF.sub(lambda match: env.get(match.group(1), match.group(0)), value)


def _with_port(argv: list[str], port: int) -> list[str]:
    """Replace the value of a ``--port N`` or ``--port=N`` argument with the pod's local port."""
    result = list(argv)
    for index, arg in enumerate(result):
        if arg == "--port" and index + 1 < len(result):
            result[index + 1] = str(port)
        elif arg.startswith("--port="):
            result[index] = f"--port={port}"
    return result
