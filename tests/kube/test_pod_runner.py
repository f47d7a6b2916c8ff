"""The test kubelet: Pods become local processes with ports, env, readiness and restarts."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
from kubernetes.client import CoreV1Api

from tests.kube.common import eventually
from tests.support.pod_runner import PodRunner

# A server that turns ready 0.5 s after it starts and reports what the kubelet gave it.
SERVER = r"""
import http.server, json, os, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
started = time.monotonic()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready" and time.monotonic() - started < 0.5:
            self.send_response(503); self.end_headers(); return
        body = json.dumps({
            "port": port, "env_port": os.environ["KUBECHAT_PORT"], "pod": os.environ["POD_NAME"],
            "ip": os.environ["POD_IP"], "greeting": os.environ["GREETING"],
            "extra": os.environ.get("EXTRA"),
        }).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def server_pod(name: str, **spec: object) -> dict:
    container = {
        "name": "server",
        "image": "ignored",
        "command": ["python", "-c", SERVER],
        "args": ["--port", "8000"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "GREETING", "value": "hello $(POD_NAME)"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 1},
    }
    return {"metadata": {"name": name}, "spec": {"containers": [container], **spec}}


def condition(pod, kind: str) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == kind), None)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def runner(cluster, api, tmp_path):
    with PodRunner(api, "default", extra_env={"EXTRA": "given"}, log_dir=tmp_path) as running:
        yield running


def test_a_pod_runs_becomes_ready_and_is_killed_on_delete(runner, api):
    core = CoreV1Api(api)
    core.create_namespaced_pod("default", server_pod("web"))

    pod = eventually(
        lambda: (
            (p := core.read_namespaced_pod("web", "default"))
            and condition(p, "Ready") == "True"
            and p
        )
    )

    port = runner.port_of("web")
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip == "127.0.0.1" and pod.status.host_ip
    assert pod.spec.node_name == runner.node_name
    assert pod.status.container_statuses[0].ready is True
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5) as response:
        seen = json.load(response)
    assert seen == {
        "port": port,
        "env_port": str(port),
        "pod": "web",
        "ip": "127.0.0.1",
        "greeting": "hello web",
        "extra": "given",
    }

    pid = runner.processes()["web"]
    core.delete_namespaced_pod("web", "default")
    eventually(lambda: not alive(pid), timeout=10)
    eventually(lambda: not core.list_namespaced_pod("default").items, timeout=10)
    assert "web" not in runner.processes()


def test_readiness_waits_for_the_probe(runner, api):
    core = CoreV1Api(api)
    core.create_namespaced_pod("default", server_pod("slow"))
    states = set()

    def ready() -> bool:
        pod = core.read_namespaced_pod("slow", "default")
        states.add(condition(pod, "Ready"))
        return condition(pod, "Ready") == "True"

    eventually(ready)
    assert "False" in states, "not ready before the probe answered 200"


def test_a_killed_process_is_restarted_and_counted(runner, api):
    core = CoreV1Api(api)
    core.create_namespaced_pod("default", server_pod("victim"))
    eventually(lambda: condition(core.read_namespaced_pod("victim", "default"), "Ready") == "True")
    first = runner.processes()["victim"]

    os.kill(first, signal.SIGKILL)

    def restarted():
        pod = core.read_namespaced_pod("victim", "default")
        status = pod.status.container_statuses[0]
        return status.restart_count == 1 and condition(pod, "Ready") == "True" and status

    status = eventually(restarted)
    assert status.last_state.terminated.exit_code == 137
    assert runner.processes()["victim"] != first


def test_a_finished_pod_reports_its_exit_code(runner, api):
    core = CoreV1Api(api)
    pod = {
        "metadata": {"name": "job"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": [sys.executable, "-c", "raise SystemExit(3)"],
                }
            ],
        },
    }
    core.create_namespaced_pod("default", pod)

    done = eventually(
        lambda: (p := core.read_namespaced_pod("job", "default")).status.phase == "Failed" and p
    )

    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert condition(done, "Ready") == "False"


@pytest.mark.parametrize(
    ("script", "container", "message"),
    [
        (  # the file at terminationMessagePath, found through the path the pod passes on
            "import os; open(os.environ['MSG'], 'w').write('why'); print('log'); exit(3)",
            {"terminationMessagePath": "/dev/termination-log"},
            "why",
        ),
        (  # an empty file, FallbackToLogsOnError and a failure: the log's tail
            "print('first'); print('last words'); raise SystemExit(3)",
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            "first\nlast words",
        ),
        (  # an empty file and the default policy (File): no message
            "print('last words'); raise SystemExit(3)",
            {},
            None,
        ),
    ],
)
def test_a_finished_pod_reports_its_termination_message(runner, api, script, container, message):
    core = CoreV1Api(api)
    pod = {
        "metadata": {"name": "job"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": [sys.executable, "-c", script],
                    "env": [{"name": "MSG", "value": "/dev/termination-log"}],
                    **container,
                }
            ],
        },
    }
    core.create_namespaced_pod("default", pod)

    done = eventually(
        lambda: (p := core.read_namespaced_pod("job", "default")).status.phase == "Failed" and p
    )

    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (3, message)
    assert not Path("/dev/termination-log").exists()  # the pod's own file, not the host's


def test_stop_leaves_no_process_behind(cluster, api, tmp_path):
    core = CoreV1Api(api)
    core.create_namespaced_pod("default", server_pod("a"))
    core.create_namespaced_pod("default", server_pod("b"))
    runner = PodRunner(cluster.base_url, "default", log_dir=tmp_path).start()
    try:
        pids = eventually(lambda: len(found := runner.processes()) == 2 and found)
    finally:
        runner.stop()
    assert not any(alive(pid) for pid in pids.values())


def test_garbage_collected_pods_are_stopped(runner, api):
    core = CoreV1Api(api)
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    pod = server_pod("owned")
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    core.create_namespaced_pod("default", pod)
    pid = eventually(lambda: runner.processes().get("owned"))

    core.delete_namespaced_config_map("owner", "default")

    eventually(lambda: not alive(pid), timeout=10)
    eventually(lambda: not core.list_namespaced_pod("default").items, timeout=10)


def test_pods_reach_the_api_with_the_kubeconfig_they_are_given(cluster, api, tmp_path):
    script = (
        "import os, kubernetes\n"
        "kubernetes.config.load_kube_config()\n"
        "name = 'from-' + os.environ['POD_NAME']\n"
        "kubernetes.client.CoreV1Api().create_namespaced_config_map("
        "'default', {'metadata': {'name': name}})\n"
    )
    pod = {
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": ["python", "-c", script],
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                }
            ],
        },
    }
    core = CoreV1Api(api)
    core.create_namespaced_pod("default", pod)
    with PodRunner(cluster.kubeconfig, "default", log_dir=tmp_path) as runner:
        phase = eventually(
            lambda: (
                core.read_namespaced_pod("client", "default").status.phase
                in ("Succeeded", "Failed")
                and core.read_namespaced_pod("client", "default").status.phase
            )
        )
        assert phase == "Succeeded", runner.logs("client")
    assert core.read_namespaced_config_map("from-client", "default").metadata.name == "from-client"


def test_children_that_ignore_sigterm_die_with_their_pod(runner, api, tmp_path):
    pid_file = tmp_path / "child.pid"
    stubborn = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {stubborn!r}])\n"
        "time.sleep(600)\n"
    )
    core = CoreV1Api(api)
    pod = {
        "metadata": {"name": "parent"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "x", "command": ["python", "-c", parent]}],
        },
    }
    core.create_namespaced_pod("default", pod)
    child = int(eventually(lambda: pid_file.exists() and pid_file.read_text()))

    core.delete_namespaced_pod("parent", "default")

    eventually(lambda: not alive(child), timeout=10)
    eventually(lambda: not core.list_namespaced_pod("default").items, timeout=10)


def test_a_pod_asking_for_more_gpus_than_the_node_has_stays_pending(cluster, api, tmp_path):
    core = CoreV1Api(api)
    with PodRunner(api, "default", log_dir=tmp_path, gpus=0) as runner:
        gpu_pod = server_pod("gpu")
        gpu_pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
        core.create_namespaced_pod("default", gpu_pod)
        core.create_namespaced_pod("default", server_pod("cpu"))

        eventually(lambda: condition(core.read_namespaced_pod("cpu", "default"), "Ready") == "True")
        pod = eventually(
            lambda: (
                (p := core.read_namespaced_pod("gpu", "default"))
                and condition(p, "PodScheduled") == "False"
                and p
            )
        )
        assert pod.status.phase == "Pending" and not pod.spec.node_name
        (scheduled,) = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        assert scheduled.reason == "Unschedulable" and "nvidia.com/gpu" in scheduled.message
        assert set(runner.processes()) == {"cpu"}
