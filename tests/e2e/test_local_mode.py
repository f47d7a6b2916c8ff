"""End to end, local mode: ``kubechat up examples/demo.yaml`` and the openai client."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kubechat import up
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import WorkerRecord
from kubechat.local_runner import LocalRunner, Process
from kubechat.manifests import load_manifests
from kubechat.plan import plan_deployment
from tests.support.processes import free_port, kubechat_argv, running

from .conftest import DEMO_YAML, Stack, stop_stack

pytestmark = pytest.mark.slow

SEED = "Which mountain is the second highest one in the world?"
LEASE_DURATION = 6.0


def chat_body(**kw) -> dict:
    return {
        "model": "kubechat-demo",
        "messages": [{"role": "user", "content": SEED}],
        "temperature": 0,
        **kw,
    }


def test_seed_question_through_the_gateway(stack: Stack) -> None:
    reply = stack.client.chat.completions.create(**chat_body())
    assert "K2" in reply.choices[0].message.content
    chunks = list(stack.client.chat.completions.create(**chat_body(stream=True)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert [m.id for m in stack.client.models.list().data] == ["kubechat-demo"]


def test_streaming_chunks_are_forwarded_as_they_arrive(stack: Stack) -> None:
    """The first chunk reaches the client while its worker is still generating the answer (a
    gateway that buffered the stream would pass it on only once the worker was done)."""
    addresses = _worker_addresses(stack)
    arrivals = []
    generating_at_first = None
    body = chat_body(stream=True, max_tokens=200, ignore_eos=True, temperature=0.7)
    sent = time.monotonic()
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", timeout=120, json=body) as r:
        worker = addresses[r.headers["x-kubechat-worker"]]
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                arrivals.append(time.monotonic())
                if generating_at_first is None:
                    generating_at_first = _running(worker)
    assert len(arrivals) >= 100
    assert generating_at_first is not None and generating_at_first >= 1
    # and early: well before the whole answer's time was over (buffered, it would come last)
    assert arrivals[0] - sent < 0.75 * (arrivals[-1] - sent)


def _worker_addresses(stack: Stack) -> dict[str, str]:
    return {r.name: r.address for r in LocalLeaseStore(stack.state_dir / "leases").snapshot()}


def _running(worker_url: str) -> float:
    """Sequences the worker is generating now (its own gauge)."""
    for line in httpx.get(f"{worker_url}/metrics", timeout=5).text.splitlines():
        if line.startswith("kubechat_worker_running "):
            return float(line.split()[1])
    return 0.0


def test_both_replicas_take_load(stack: Stack) -> None:
    def one(i: int) -> str:
        r = httpx.post(
            f"{stack.url}/v1/chat/completions",
            timeout=120,
            json=chat_body(max_tokens=16, temperature=0.8, seed=i),
        )
        assert r.status_code == 200, r.text
        return r.headers["x-kubechat-worker"]

    with ThreadPoolExecutor(8) as pool:
        served_by = list(pool.map(one, range(16)))
    assert set(served_by) == {"demo-0", "demo-1"}, served_by


def test_gateway_metrics(stack: Stack) -> None:
    text = httpx.get(f"{stack.url}/metrics").text
    assert 'kubechat_gateway_live_workers{model="kubechat-demo"} 2.0' in text
    assert (
        'kubechat_gateway_requests_total{code="200",endpoint="chat",model="kubechat-demo"}' in text
    )
    assert "kubechat_gateway_upstream_latency_seconds_count" in text


def test_unknown_model_is_404(stack: Stack) -> None:
    r = httpx.post(f"{stack.url}/v1/chat/completions", json={**chat_body(), "model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_kill_9_of_a_worker_retries_its_answers_and_ends_its_streams(stack: Stack) -> None:
    """12 complete (non-streamed) and 4 streamed requests run on both workers; one worker is
    killed with SIGKILL while it generates at least 5 of them, so at least one complete answer.
    Every complete answer still arrives (retried on the other worker); a stream under way on the
    killed worker ends with an error event, one on the survivor completes; the dead worker
    leaves routing within the lease duration."""
    pids = stack.worker_pids()
    assert set(pids) == {"demo-0", "demo-1"}
    victim = _worker_addresses(stack)["demo-0"]
    retries_before = _retries(stack)

    def complete(i: int) -> tuple[int, str]:
        r = httpx.post(
            f"{stack.url}/v1/chat/completions",
            timeout=120,
            json=chat_body(max_tokens=96, ignore_eos=True, temperature=0.8, seed=i),
        )
        return r.status_code, r.text

    def streamed(i: int) -> tuple[str, str]:
        body = chat_body(stream=True, max_tokens=96, ignore_eos=True, temperature=0.8, seed=i)
        outcome = "no finish"
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=120) as r:
            worker = r.headers.get("x-kubechat-worker", "")
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        outcome = "error: " + str(event["error"]["code"])
                    elif any(c.get("finish_reason") for c in event.get("choices") or []):
                        outcome = "completed"
        return worker, outcome

    with ThreadPoolExecutor(16) as pool:
        answers = [pool.submit(complete, i) for i in range(12)]
        streams = [pool.submit(streamed, 100 + i) for i in range(4)]
        # more sequences than there are streams: a complete answer is among them
        deadline = time.monotonic() + 60
        while (running := _running(victim)) < 5:
            assert time.monotonic() < deadline, f"the victim generates only {running}"
            time.sleep(0.05)
        os.kill(pids["demo-0"], signal.SIGKILL)
        killed_at = time.monotonic()
        left_routing = None
        while time.monotonic() - killed_at < LEASE_DURATION + 4:
            if _live_workers(stack) == 1:
                left_routing = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        codes = [f.result() for f in answers]
        stream_outcomes = [f.result() for f in streams]
    assert [code for code, _ in codes] == [200] * 12, codes
    assert _retries(stack) > retries_before  # the answers cut on the victim went elsewhere
    for worker, outcome in stream_outcomes:
        if worker == "demo-1":
            assert outcome == "completed", stream_outcomes
        else:  # on the victim: cut mid-way, or finished just before the kill
            assert outcome in ("error: upstream_failed", "completed"), stream_outcomes
    assert left_routing is not None and left_routing <= LEASE_DURATION + 1.0, left_routing


def _retries(stack: Stack) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{stack.url}/metrics").text.splitlines()
        if line.startswith("kubechat_gateway_retries_total{")
    )


def _live_workers(stack: Stack) -> float:
    for line in httpx.get(f"{stack.url}/metrics").text.splitlines():
        if line.startswith('kubechat_gateway_live_workers{model="kubechat-demo"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_up_rejects_a_broken_manifest_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: kubechat.dev/v1alpha1\nkind: ModelDeployment\n"
        "metadata: {name: bad}\nspec:\n  model: {path: kubechat:demo}\n"
        "  resources: {gpus: -1}\n"
    )
    proc = subprocess.run(kubechat_argv("up", str(bad)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "spec.resources.gpus" in proc.stderr


def test_gateway_auth_404_and_503(tmp_path: Path) -> None:
    """With an API key: 401 without it; with it, 503 + Retry-After for a model whose only worker
    lost its heartbeat, 404 for a model nobody serves."""
    leases = tmp_path / "leases"
    LocalLeaseStore(leases).publish(
        WorkerRecord(
            name="ghost-0",
            deployment="ghost",
            models=("ghost",),
            address="http://127.0.0.1:9",
            ready=True,
            draining=False,
            in_flight=0,
            queued=0,
            capacity=1,
            renew_time=time.time() - 60,
            lease_duration=LEASE_DURATION,
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = kubechat_argv(
        "gateway", "--port", str(port), "--lease-store", f"local:{leases}", "--api-key", "sekrit"
    )
    with running(argv, ready_url=f"{url}/health", log_path=tmp_path / "gw.log"):
        body = {"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=body)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"}
        )
        assert r.status_code == 401
        auth = {"Authorization": "Bearer sekrit"}
        r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "no_live_worker"
        r = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": "other"}, headers=auth)
        assert r.status_code == 404
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers=auth).json()["data"] == []
        assert httpx.get(f"{url}/health").status_code == 200
        r = httpx.post(f"{url}/v1/chat/completions", content=b"{", headers=auth)
        assert r.status_code == 400
        assert json.loads(r.text)["error"]["type"] == "invalid_request_error"


def _stream_to_the_end(url: str, body: dict, started: threading.Event) -> dict:
    """Stream ``body`` through the gateway; what arrived: content chunks, finish reason, errors,
    whether [DONE] came, and when the first and last chunk did."""
    seen: dict = {"chunks": 0, "finish": None, "errors": [], "done": False}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line == "data: [DONE]":
                seen["done"] = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    seen["errors"].append(event["error"])
                if event.get("usage"):
                    seen["tokens"] = event["usage"]["completion_tokens"]
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        seen["chunks"] += 1
                        started.set()
                    seen["finish"] = choice.get("finish_reason") or seen["finish"]
    seen["ended"] = time.monotonic()
    return seen


def test_ctrl_c_finishes_the_streams_in_flight_and_leaves_no_process(
    demo_model_dir, tmp_path_factory
) -> None:
    """Ctrl-C while long streams run: the workers drain them (for up to ``--drain-grace``), the
    gateway, stopped only after the workers, relays them to the end; then nothing is left."""
    from .conftest import start_stack

    # a grace long enough for the streams on a loaded machine; the gateway's own is 10 s
    s = start_stack(
        demo_model_dir, tmp_path_factory.mktemp("ctrlc"), "--no-ui", "--drain-grace", "100"
    )
    pids = s.worker_pids()
    assert len(pids) == 2
    body = chat_body(
        stream=True,
        max_tokens=250,
        ignore_eos=True,
        temperature=0.8,
        stream_options={"include_usage": True},
    )
    flags = [threading.Event() for _ in range(4)]
    with ThreadPoolExecutor(len(flags)) as pool:
        streams = [pool.submit(_stream_to_the_end, s.url, body, f) for f in flags]
        assert all(f.wait(120) for f in flags), "the streams did not start"
        stopped_at = time.monotonic()
        code = stop_stack(s.proc)
        results = [f.result() for f in streams]
    assert code == 130
    for seen in results:
        assert seen["errors"] == [] and seen["done"], seen
        assert (seen["finish"], seen.get("tokens")) == ("length", 250), seen
    lasted = max(seen["ended"] for seen in results) - stopped_at
    print(f"the streams ended {lasted:.1f} s after Ctrl-C")
    time.sleep(0.5)
    assert s.worker_pids() == {}
    assert not list((s.state_dir / "leases").glob("*.json"))
    assert "stopped" in s.log.read_text()


def _up_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    up.configure(p)
    return p.parse_args([str(DEMO_YAML), "--port", str(free_port()), *argv])


def test_up_binds_workers_to_loopback_and_keeps_keys_off_command_lines(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("sk-from-a-file\n")
    args = _up_args(
        "--host", "0.0.0.0", "--api-key", "sk-up-secret", "--api-key-file", str(key_file), "--no-ui"
    )
    plans = [plan_deployment(md) for md in load_manifests(args.files)]
    runner, _, _ = up.build_runner(args, plans, tmp_path)
    workers = [p for p in runner.processes if p.role == "worker"]
    (gateway,) = [p for p in runner.processes if p.name == "gateway"]
    assert len(workers) == 2
    for w in workers:
        assert w.argv[w.argv.index("--host") + 1] == "127.0.0.1"
        assert w.url.startswith("http://127.0.0.1:")
    assert gateway.argv[gateway.argv.index("--host") + 1] == "0.0.0.0"
    assert not any("sk-up-secret" in part for p in runner.processes for part in p.argv)
    assert "sk-up-secret" in gateway.env["KUBECHAT_API_KEYS"].split(",")
    assert all("sk-up-secret" not in p.env.get("KUBECHAT_API_KEYS", "") for p in workers)
    assert gateway.argv[gateway.argv.index("--api-key-file") + 1] == str(key_file)


def test_up_gives_its_drain_grace_to_the_workers(tmp_path: Path) -> None:
    args = _up_args("--drain-grace", "45", "--no-ui")
    plans = [plan_deployment(md) for md in load_manifests(args.files)]
    runner, _, _ = up.build_runner(args, plans, tmp_path)
    workers = [p for p in runner.processes if p.role == "worker"]
    assert len(workers) == 2
    assert all(w.argv[w.argv.index("--drain-grace") + 1] == "45" for w in workers)


# A stand-in process that notes when it gets SIGTERM and, ``delay`` seconds later, exits.
_NOTE_SIGTERM = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(*_):
    (out / "term").write_text(repr(time.time()))
    time.sleep(float(sys.argv[2]))
    (out / "exit").write_text(repr(time.time()))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(out / "up").write_text("")
while True:
    time.sleep(1)
"""


def test_stopping_drains_the_workers_before_the_gateway_is_told_to_stop(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path, on_event=lambda _: None)
    for name, role, delay in [("demo-0", "worker", "1.5"), ("gateway", "front", "0")]:
        (tmp_path / name).mkdir()
        argv = [sys.executable, "-c", _NOTE_SIGTERM, str(tmp_path / name), delay]
        runner.add(Process(name, argv, dict(os.environ), tmp_path / f"{name}.log", "", role=role))
    runner.start_all()
    deadline = time.monotonic() + 20
    while not all((tmp_path / n / "up").exists() for n in ("demo-0", "gateway")):
        assert time.monotonic() < deadline, "the stand-ins did not start"
        time.sleep(0.05)
    runner.stop_all(grace=10)
    worker_exited = float((tmp_path / "demo-0" / "exit").read_text())
    gateway_told = float((tmp_path / "gateway" / "term").read_text())
    assert gateway_told >= worker_exited


def _listening_tcp() -> dict[int, set[str]]:
    """Listening IPv4 TCP sockets of this machine: port -> the addresses bound."""
    out: dict[int, set[str]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # LISTEN
            continue
        address, port = fields[1].split(":")
        ip = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
        out.setdefault(int(port, 16), set()).add(ip)
    return out


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return lines


def test_up_on_all_interfaces_exposes_only_the_gateway_and_no_key(
    demo_model_dir, tmp_path_factory, monkeypatch
) -> None:
    """``--host 0.0.0.0``: the gateway listens on every interface, the workers (which check no
    key) on loopback only; the key given in the environment is on no command line."""
    from .conftest import start_stack

    key = "sk-e2e-never-on-a-command-line"
    monkeypatch.setenv("KUBECHAT_API_KEYS", key)
    s = start_stack(
        demo_model_dir, tmp_path_factory.mktemp("exposed"), "--host", "0.0.0.0", "--no-ui"
    )
    monkeypatch.delenv("KUBECHAT_API_KEYS")
    try:
        assert not [c for c in _command_lines() if key in c]
        listening = _listening_tcp()
        workers = LocalLeaseStore(s.state_dir / "leases").snapshot()
        assert len(workers) == 2
        for w in workers:
            assert w.address.startswith("http://127.0.0.1:"), w.address
            assert listening[int(w.address.rsplit(":", 1)[1])] == {"127.0.0.1"}
        assert listening[int(s.url.rsplit(":", 1)[1])] == {"0.0.0.0"}
        body = chat_body(max_tokens=4)
        assert httpx.post(f"{s.url}/v1/chat/completions", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{s.url}/v1/chat/completions", json=body, headers=auth, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        stop_stack(s.proc)


def test_up_says_it_uses_the_cached_demo_model(stack: Stack, demo_model_dir: Path) -> None:
    log = stack.log.read_text()
    assert f"kubechat up: using the cached demo model at {demo_model_dir}\n" in log
    assert "building the demo model" not in log


def test_up_says_it_builds_the_demo_model_when_the_cache_has_none(tmp_path: Path) -> None:
    """With an empty cache it announces the build (stopped there: the build itself is the
    demo_model tests' subject)."""
    env = {**os.environ, "KUBECHAT_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    argv = kubechat_argv(
        "up", str(DEMO_YAML), "--port", str(free_port()), "--state-dir", str(tmp_path), "--no-ui"
    )
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = proc.stdout.readline().decode()
    finally:
        proc.kill()
        proc.wait(30)
    assert first == "kubechat up: building the demo model (once; cached for later runs)\n"


def test_up_reads_a_relative_model_path_from_the_manifest_folder(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    """``path: ./my-model`` is the folder beside the manifest, whatever the working directory
    of ``kubechat up``: the worker loads it and answers."""
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "my-model").symlink_to(demo_model_dir, target_is_directory=True)
    (deploy / "relative.yaml").write_text(
        "apiVersion: kubechat.dev/v1alpha1\nkind: ModelDeployment\n"
        "metadata: {name: relative}\nspec:\n"
        "  model: {path: ./my-model, names: [relative-demo], trustRemoteCode: true}\n"
        "  resources: {gpus: 0}\n  replicas: 1\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    log = tmp_path / "up.log"
    argv = kubechat_argv(
        "up", "../deploy/relative.yaml", "--port", str(port), "--no-ui",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=elsewhere, stdout=out, stderr=subprocess.STDOUT)
    try:
        from .conftest import _wait_for

        _wait_for(lambda: "ready." in log.read_text(), 240, proc, log)
        body = {**chat_body(), "model": "relative-demo"}
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert "K2" in r.json()["choices"][0]["message"]["content"]
    finally:
        assert stop_stack(proc) == 130
