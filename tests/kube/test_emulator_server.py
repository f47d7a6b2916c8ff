"""Serving the emulator: in the test's own loop, CRDs as API objects, streaming details, tools."""

from __future__ import annotations

import json
import subprocess

import httpx
import yaml

from tests.kube.common import MINIMAL_CRD
from tests.support.kube_server import serve_emulator
from tests.support.kube_tools import ensure_helm, ensure_kubectl

WIDGETS_URL = "/apis/test.kubechat.dev/v1/namespaces/default/widgets"


async def test_serve_in_the_current_loop_and_create_crds_through_the_api():
    crd = yaml.safe_load(MINIMAL_CRD.read_text())
    async with (
        serve_emulator() as (emulator, base_url),
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        assert (await http.get(WIDGETS_URL)).status_code == 404

        created = await http.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
        )
        assert created.status_code == 201
        conditions = {c["type"]: c["status"] for c in created.json()["status"]["conditions"]}
        assert conditions == {"NamesAccepted": "True", "Established": "True"}

        group = (await http.get("/apis/test.kubechat.dev/v1")).json()
        names = {entry["name"]: entry for entry in group["resources"]}
        assert names["widgets"]["shortNames"] == ["wd"]
        assert names["widgets/scale"]["kind"] == "Scale"
        assert "widgets/status" in names

        body = {"apiVersion": "test.kubechat.dev/v1", "kind": "Widget", "metadata": {"name": "w"}}
        assert (await http.post(WIDGETS_URL, json=body)).status_code == 201
        stored = emulator.objects["test.kubechat.dev/v1/widgets", "default", "w"]
        assert stored["metadata"]["uid"], "kmock's object array holds what the API stored"

        await http.delete(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        )
        assert (await http.get(WIDGETS_URL)).status_code == 404
        assert (await http.get("/apis/test.kubechat.dev/v1")).status_code == 404


async def test_core_discovery_names_the_core_group_version():
    async with serve_emulator() as (_, base_url), httpx.AsyncClient(base_url=base_url) as http:
        core = (await http.get("/api/v1")).json()
        assert core["groupVersion"] == "v1"
        assert {"pods", "namespaces", "events", "pods/status"} <= {
            r["name"] for r in core["resources"]
        }
        leases = (await http.get("/apis/coordination.k8s.io/v1")).json()
        assert "leases" in {r["name"] for r in leases["resources"]}


async def test_watch_streams_json_lines_and_initial_events_end_with_a_bookmark():
    async with serve_emulator() as (_, base_url), httpx.AsyncClient(base_url=base_url) as http:
        await http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "a"}})
        params = {
            "watch": "true",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "1",
        }
        async with http.stream(
            "GET", "/api/v1/namespaces/default/configmaps", params=params
        ) as response:
            assert response.headers["content-type"].startswith("application/json")
            events = [json.loads(line) async for line in response.aiter_lines() if line]

    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_a_watch_ends_when_the_server_stops():
    async with serve_emulator() as (emulator, base_url):
        client = httpx.AsyncClient(base_url=base_url, timeout=10)
        response = await client.send(
            client.build_request("GET", "/api/v1/namespaces/default/pods", params={"watch": "1"}),
            stream=True,
        )
        assert emulator.open_watches
    assert not emulator.open_watches
    await response.aclose()
    await client.aclose()


def test_kubectl_and_helm_binaries_run():
    for binary, args in ((ensure_kubectl(), ["version", "--client"]), (ensure_helm(), ["version"])):
        result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "v" in result.stdout


async def test_a_partition_cuts_off_matching_requests_until_healed():
    pods = "/api/v1/namespaces/default/pods"
    cut = {"labelSelector": "cut-off"}
    async with (
        serve_emulator() as (emulator, base_url),
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        watch = await http.send(
            http.build_request("GET", pods, params={"watch": "1", **cut}), stream=True
        )
        other = await http.send(http.build_request("GET", pods, params={"watch": "1"}), stream=True)
        assert len(emulator.open_watches) == 2
        heal = emulator.partition(lambda raw: raw.query.get("labelSelector") == "cut-off")

        assert [line async for line in watch.aiter_lines()] == []  # the watch ended at once
        assert len(emulator.open_watches) == 1  # the other client's watch goes on
        refused = await http.get(pods, params=cut)
        assert refused.status_code == 503
        assert refused.json()["reason"] == "ServiceUnavailable"
        assert (await http.get(pods)).status_code == 200

        heal()
        assert (await http.get(pods, params=cut)).status_code == 200
        await other.aclose()
