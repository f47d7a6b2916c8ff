"""``kubechat up FILE...``: run ModelDeployment manifests as local processes.

The same YAML a cluster takes (``kubectl apply -f``) becomes, on one machine, one worker process
per replica, a gateway in front of them and the chat UI, with leases kept as files in a state
folder. Ctrl-C drains the workers and stops everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import tempfile
import time
from pathlib import Path

from .autoscale import scalable_plan
from .cli import UsageError
from .defaults import DRAIN_GRACE
from .demo_model.cache import DEMO_MODEL_PATH, cached_demo_model, ensure_demo_model
from .local_runner import KUBECHAT, LocalRunner, Process
from .local_scaler import LocalScaler
from .manifests import ManifestError, load_manifests
from .plan import plan_deployment
from .vllm_env import DEFAULT_VENV, INSTALL_HINT, VENV_VARIABLE, vllm_python

SEED_QUESTION = "Which mountain is the second highest one in the world?"
DEFAULT_UI_PORT = 7860  # Gradio's usual port
# Workers check no API key: reachable from this machine only, the gateway is the way in.
WORKER_HOST = "127.0.0.1"
API_KEYS_ENV = "KUBECHAT_API_KEYS"  # read by `kubechat gateway` (gateway/auth.py)


def configure(p: argparse.ArgumentParser) -> None:
    """Declare the flags of ``kubechat up``."""
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="ModelDeployment manifests (YAML, multi-document allowed) or folders",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the gateway and the chat page listen on (workers always listen on "
        f"{WORKER_HOST}: they check no API key)",
    )
    p.add_argument("--port", type=int, default=8000, help="the gateway's port")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="leases and logs (default: a new temporary folder)",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="require this API key at the gateway (repeatable); it is handed to the gateway in "
        "its environment, but stays visible on this command's own command line (ps): on a "
        "shared machine use $KUBECHAT_API_KEYS (comma-separated) or --api-key-file",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help="file with one accepted API key per line, read by the gateway",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for every process to become ready",
    )
    p.add_argument(
        "--drain-grace",
        type=float,
        default=float(DRAIN_GRACE),
        help="seconds the workers may take to finish their requests after Ctrl-C; the gateway "
        "and the chat page stop after them",
    )
    p.add_argument(
        "--ui-port",
        type=int,
        default=None,
        help=f"the chat page's port (default {DEFAULT_UI_PORT}, or a free one if that is taken)",
    )
    p.add_argument("--no-ui", action="store_true", help="do not start the chat page")
    p.add_argument(
        "--vllm-env",
        default=None,
        metavar="DIR",
        help=f"the Python environment (virtualenv) vLLM runs from, for deployments with engine: "
        f"vllm (default: ${VENV_VARIABLE}, else {DEFAULT_VENV}; {INSTALL_HINT})",
    )


def run(args: argparse.Namespace) -> int:
    """Validate, build, start, wait for readiness, then supervise until Ctrl-C or SIGTERM."""
    try:
        deployments = load_manifests(args.files)
    except ManifestError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot read manifest: {exc}") from exc
    if not deployments:
        raise UsageError("no ModelDeployment found in " + ", ".join(map(str, args.files)))
    # an autoscaled deployment's workers are started by its LocalScaler, not up front
    plans = [
        plan_deployment(md) if md.spec.autoscaling is None else scalable_plan(md)
        for md in deployments
    ]
    if any(DEMO_MODEL_PATH in w.args for plan in plans for w in plan.workers):
        cached = cached_demo_model()
        if cached is not None:
            say(f"using the cached demo model at {cached}")
        else:
            say("building the demo model (once; cached for later runs)")
            ensure_demo_model(progress=True)

    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="kubechat-up-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    fixed = [
        dataclasses.replace(plan, workers=[]) if md.spec.autoscaling else plan
        for md, plan in zip(deployments, plans, strict=True)
    ]
    runner, gateway_url, ui_url = build_runner(args, fixed, state_dir)
    # an autoscaled deployment on vLLM has no worker in `fixed`, but its scaler starts some
    runner.vllm_python = runner.vllm_python or _vllm_python(args, plans)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    scalers = [
        LocalScaler(md, runner, WORKER_HOST, env, args.drain_grace, on_event=say)
        for md in deployments
        if md.spec.autoscaling is not None
    ]
    for scaler in scalers:
        scaling = scaler.spec
        say(
            f"{scaler.md.name}: autoscaled, {scaling.min_replicas} to {scaling.max_replicas} "
            "workers" + (": none until the first request" if scaling.min_replicas == 0 else "")
        )

    stopping = {"sig": None}

    def on_signal(sig: int, _frame: object) -> None:
        stopping["sig"] = sig

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say(
        f"starting {sum(len(p.workers) for p in fixed)} worker(s), the gateway"
        + (" and the chat page" if ui_url else "")
        + "; "
        f"logs in {state_dir / 'logs'}"
    )
    runner.start_all()
    try:
        deadline = time.monotonic() + args.startup_timeout
        for scaler in scalers:
            scaler.step()
        while not runner.all_ready():
            if stopping["sig"] is not None:
                return _shutdown(runner, args.drain_grace, stopping["sig"])
            if time.monotonic() > deadline:
                say("not ready in time; last log lines of what is not ready:")
                for p in runner.processes:
                    if p.ready_at is None:
                        say(f"--- {p.name} ({p.log_path})\n{p.log_tail()}")
                runner.stop_all(args.drain_grace)
                return 1
            failed = [p for p in runner.processes if p.restarts and p.ready_at is None]
            if failed:
                p = failed[0]
                say(f"{p.name} failed to start:\n{p.log_tail()}")
                runner.stop_all(args.drain_grace)
                return 1
            runner.poll()
            time.sleep(0.25)
        _print_ready(plans, gateway_url, _key_hint(args), ui_url)
        while stopping["sig"] is None:
            runner.poll()
            for scaler in scalers:
                scaler.step()
            time.sleep(0.25)
        return _shutdown(runner, args.drain_grace, stopping["sig"])
    finally:
        runner.stop_all(1.0)


def build_runner(
    args: argparse.Namespace, plans: list, state_dir: Path
) -> tuple[LocalRunner, str, str | None]:
    """The stack's processes, not started yet: a worker per replica (on 127.0.0.1 whatever
    ``--host`` says), the gateway and, unless ``--no-ui``, the chat page. Returns the runner,
    the gateway's URL and the chat page's (None without it)."""
    runner = LocalRunner(state_dir, on_event=say, vllm_python=_vllm_python(args, plans))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for plan in plans:
        for worker in plan.workers:
            runner.add_worker(worker, host=WORKER_HOST, env=env, drain_grace=args.drain_grace)
    gateway_url = f"http://{args.host}:{args.port}"
    gateway_argv = [
        *KUBECHAT,
        "gateway",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--lease-store",
        f"local:{state_dir / 'leases'}",
    ]
    # keys in the gateway's environment or a file, never on a command line: ps shows those
    keys = [k for k in [env.get(API_KEYS_ENV, ""), *args.api_key] if k]
    gateway_env = {**env, API_KEYS_ENV: ",".join(keys)} if keys else env
    if args.api_key_file is not None:
        gateway_argv += ["--api-key-file", str(args.api_key_file.resolve())]
    runner.add(
        Process(
            "gateway", gateway_argv, gateway_env, state_dir / "logs" / "gateway.log", gateway_url
        )
    )
    _check_port_free(args.host, args.port)
    ui_url = None
    if not args.no_ui:
        ui_port = choose_ui_port(args.host, args.ui_port, args.port)
        ui_url = f"http://{args.host}:{ui_port}"
        ui_argv = [
            *KUBECHAT,
            "ui",
            "--host",
            args.host,
            "--port",
            str(ui_port),
            "--lease-store",
            f"local:{state_dir / 'leases'}",
        ]
        # the page answers / once it is up
        runner.add(Process("ui", ui_argv, env, state_dir / "logs" / "ui.log", ui_url, "/"))
    return runner, gateway_url, ui_url


def _vllm_python(args: argparse.Namespace, plans: list) -> str | None:
    """vLLM's Python when a deployment runs on vLLM (None otherwise); UsageError without it."""
    if not any(w.vllm is not None for plan in plans for w in plan.workers):
        return None
    try:
        return str(vllm_python(args.vllm_env))
    except FileNotFoundError as exc:
        raise UsageError(f"engine: vllm: {exc}") from exc


def _shutdown(runner: LocalRunner, grace: float, sig: int) -> int:
    say("stopping: workers finish their requests, then the gateway and the chat page stop")
    runner.stop_all(grace)
    say("stopped")
    return 0 if sig == signal.SIGTERM else 130


def _key_hint(args: argparse.Namespace) -> str | None:
    """The key to show in the printed example: the first flag's, a placeholder when keys come
    from the environment or a file (not printed), None when the gateway is open."""
    if args.api_key:
        return args.api_key[0].split(",")[0].strip()
    if os.environ.get(API_KEYS_ENV, "").strip(",") or args.api_key_file is not None:
        return "$KUBECHAT_API_KEY"
    return None


def _print_ready(plans: list, gateway_url: str, key: str | None, ui_url: str | None) -> None:
    model = plans[0].model_names[0]
    auth = f' -H "Authorization: Bearer {key}"' if key else ""
    body = (
        '{"model": "'
        + model
        + '", "messages": [{"role": "user", "content": "'
        + SEED_QUESTION
        + '"}]}'
    )
    models = ", ".join(m for p in plans for m in p.model_names)
    say(
        "\nready.\n"
        f"  OpenAI endpoint: {gateway_url}/v1   (models: {models})\n"
        f"  metrics:         {gateway_url}/metrics\n"
        + (f"  chat page:       {ui_url}\n" if ui_url else "")
        + "try:\n"
        f"  curl -s {gateway_url}/v1/chat/completions -H 'Content-Type: application/json'{auth}"
        f" -d {shlex.quote(body)}\n"
        "Ctrl-C stops everything."
    )


def _check_port_free(host: str, port: int, flag: str = "--port") -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"port {port} on {host} is taken ({exc.strerror}); use {flag}"
            ) from exc


def choose_ui_port(host: str, requested: int | None, gateway_port: int) -> int:
    """The chat page's port: ``requested`` (UsageError if taken), else 7860, else a free one."""
    import socket

    if requested is not None:
        if requested == gateway_port:
            raise UsageError("--ui-port must differ from --port")
        _check_port_free(host, requested, "--ui-port")
        return requested
    with socket.socket() as s:
        try:
            if gateway_port == DEFAULT_UI_PORT:
                raise OSError("the gateway's port")
            s.bind((host, DEFAULT_UI_PORT))
        except OSError:
            s.bind((host, 0))  # the default is taken: any free port (the URL is printed)
        return s.getsockname()[1]


def say(message: str) -> None:
    """Progress for the person at the terminal."""
    print(f"kubechat up: {message}" if not message.startswith("\n") else message, flush=True)
