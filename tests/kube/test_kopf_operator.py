"""A tiny kopf operator against the emulated API: handlers run, status is patched, kopf's
finalizer, adoption (ownerReferences by uid) and garbage collection all work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import kopf
import pytest
from kubernetes.client import ApiException, CoreV1Api, CustomObjectsApi

from tests.kube.common import WIDGETS, eventually
from tests.support.kube_kopf import register_login

GROUP, VERSION, PLURAL = WIDGETS


def tiny_operator(base_url: str, core: CoreV1Api) -> tuple[kopf.OperatorRegistry, list[str]]:
    """An operator (own registry: nothing leaks into kopf's global one) and its deletion log."""
    registry = kopf.OperatorRegistry()
    register_login(registry, base_url)
    deleted: list[str] = []

    @kopf.on.create(GROUP, VERSION, PLURAL, id="created", registry=registry)
    def created(spec, name, body, **_: object) -> dict:
        child = {"metadata": {"name": f"{name}-config"}, "data": {"colour": spec["colour"]}}
        kopf.adopt(child, owner=body)
        core.create_namespaced_config_map("default", child)
        return {"seen": spec["colour"]}  # kopf stores it in status.created

    @kopf.on.field(GROUP, VERSION, PLURAL, field="spec.colour", registry=registry)
    def recoloured(new, patch, **_: object) -> None:
        patch.status["colour"] = new

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def removed(name, **_: object) -> None:
        deleted.append(name)

    return registry, deleted


@contextlib.asynccontextmanager
async def running(registry: kopf.OperatorRegistry) -> AsyncIterator[None]:
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.posting.level = logging.WARNING
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            namespaces=["default"],
            standalone=True,
            stop_flag=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def until(check, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout}s")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
async def test_kopf_operator_handles_a_custom_resource_lifecycle(cluster, api):
    custom, core = CustomObjectsApi(api), CoreV1Api(api)
    registry, deleted = tiny_operator(cluster.base_url, core)

    def widget() -> dict | None:
        try:
            return custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async with running(registry):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"colour": "red"},
        }
        await asyncio.to_thread(
            custom.create_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, body
        )
        created = await until(lambda: (w := widget()) and "created" in w.get("status", {}) and w)
        assert created["status"]["created"] == {"seen": "red"}
        assert created["metadata"]["finalizers"], "kopf guards deletion with its finalizer"
        child = await asyncio.to_thread(core.read_namespaced_config_map, "w-config", "default")
        assert child.metadata.owner_references[0].uid == created["metadata"]["uid"]

        await asyncio.to_thread(
            custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "w",
            {"spec": {"colour": "blue"}},
        )
        await until(lambda: (widget() or {}).get("status", {}).get("colour") == "blue")

        await asyncio.to_thread(
            custom.delete_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w"
        )
        await until(lambda: widget() is None)

    assert deleted == ["w"]
    configmaps = await asyncio.to_thread(core.list_namespaced_config_map, "default")
    assert configmaps.items == [], "the adopted child was garbage-collected with its owner"


OPERATOR_FILE = """
import kopf

@kopf.on.create("test.kubechat.dev", "v1", "widgets", id="created")
def created(spec, **_):
    return {"colour": spec.get("colour")}
"""


@pytest.mark.timeout(120)
def test_kopf_run_in_a_subprocess_logs_in_through_the_kubeconfig(cluster, api, tmp_path):
    operator = tmp_path / "operator.py"
    operator.write_text(OPERATOR_FILE)
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    command = [sys.executable, "-m", "kopf", "run", "--standalone", "-n", "default", str(operator)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    custom = CustomObjectsApi(api)
    try:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"colour": "green"},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)

        def status() -> dict:
            widget = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")
            return widget.get("status", {}).get("created")

        assert eventually(status, timeout=60) == {"colour": "green"}
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "login_via_client' succeeded" in output
