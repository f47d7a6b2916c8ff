"""The Helm chart: lints strictly, renders valid Kubernetes objects, and says what it promises."""

from __future__ import annotations

import argparse
import base64
import importlib
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kubechat.cli import COMMANDS
from kubechat.operator.pods import COMMON_LABELS, WORKER_PORT
from tests.chart.chart_tools import (
    ALL_ON_VALUES,
    CHART,
    NAMESPACE,
    REPO,
    arg_value,
    find,
    helm,
    one,
    pod_specs,
    render,
    render_text,
)
from tests.support.kube_crds import load_crd, served_versions
from tests.support.kube_schema import apply_defaults, validation_errors

# The oldest and newest Kubernetes versions the chart supports (Chart.yaml kubeVersion: >=1.29).
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
CUSTOM_GROUPS = ("kubechat.dev/", "monitoring.coreos.com/")


def test_crd_in_chart_is_identical_to_top_level_crd() -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == ["modeldeployment.yaml"]
    top = (REPO / "crds" / "modeldeployment.yaml").read_bytes()
    assert (CHART / "crds" / "modeldeployment.yaml").read_bytes() == top


@pytest.mark.parametrize("values", [None, ALL_ON_VALUES], ids=["defaults", "all-on"])
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("which", ["defaults", "all-on"])
def test_every_manifest_validates_strictly(which: str, version: str, request) -> None:
    docs = request.getfixturevalue("default_docs" if which == "defaults" else "all_on_docs")
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue  # no bundled schema: checked against their CRDs/tools below
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 15


def test_model_deployments_from_values_match_the_crd(all_on_docs: list[dict]) -> None:
    (served,) = served_versions(load_crd(CHART / "crds" / "modeldeployment.yaml"))
    mds = find(all_on_docs, "ModelDeployment")
    assert [m["metadata"]["name"] for m in mds] == ["demo", "baichuan-13b-chat"]
    for md in mds:
        assert md["metadata"]["namespace"] == "models"
        assert validation_errors(apply_defaults(md, served.schema), served.schema) == []
    assert mds[0]["metadata"]["labels"]["tier"] == "test"


def test_crd_rejects_a_broken_model_deployment_from_values() -> None:
    (served,) = served_versions(load_crd(CHART / "crds" / "modeldeployment.yaml"))
    (md,) = render(
        sets=(
            "modelDeployments[0].name=bad",
            "modelDeployments[0].spec.replicas=-1",
            "modelDeployments[0].spec.model.path=x",
        ),
        namespace=NAMESPACE,
    )[-1:]
    assert md["kind"] == "ModelDeployment"
    assert any("replicas" in e for e in validation_errors(md, served.schema))


@pytest.mark.parametrize("which", ["defaults", "all-on"])
def test_every_pod_is_non_root_read_only_and_bounded(which: str, request) -> None:
    docs = request.getfixturevalue("default_docs" if which == "defaults" else "all_on_docs")
    specs = pod_specs(docs)
    assert sorted(name.rsplit("-", 1)[1] for name in specs) == ["gateway", "operator", "ui"]
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] >= 10000, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert set(container["resources"]) == {"requests", "limits"}, name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            # A read-only root needs a writable /tmp for Python, Gradio and kopf.
            assert "/tmp" in [m["mountPath"] for m in container["volumeMounts"]], name


def test_image_is_pinned_by_digest_when_given(all_on_docs: list[dict]) -> None:
    for spec in pod_specs(all_on_docs).values():
        assert spec["containers"][0]["image"].startswith("ghcr.io/kubechat/kubechat@sha256:")
    operator = one(all_on_docs, "Deployment", "-operator")["spec"]["template"]["spec"]
    args = operator["containers"][0]["args"]
    assert arg_value(args, "--worker-image") == operator["containers"][0]["image"]


def test_operator_gives_workers_the_account_the_chart_made(all_on_docs: list[dict]) -> None:
    operator = one(all_on_docs, "Deployment", "-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    sa_name = arg_value(container["args"], "--worker-service-account")
    assert sa_name == "llm-worker"
    accounts = [d for d in find(all_on_docs, "ServiceAccount") if d["metadata"]["name"] == sa_name]
    assert sorted(a["metadata"]["namespace"] for a in accounts) == ["models", "models-b"]
    for binding in find(all_on_docs, "RoleBinding", "-worker"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": sa_name,
                "namespace": binding["metadata"]["namespace"],
            }
        ]


def _rules(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_is_least_privilege(default_docs: list[dict]) -> None:
    worker = _rules(one(default_docs, "Role", "-worker"))
    assert worker == {
        ("coordination.k8s.io", "leases"): {"get", "create", "update", "patch", "delete"},
        ("", "pods"): {"get"},
    }
    discovery = _rules(one(default_docs, "Role", "-discovery"))
    assert discovery == {
        ("coordination.k8s.io", "leases"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        # the autoscaled models, and the demand annotation (scale from zero)
        ("kubechat.dev", "modeldeployments"): {"list", "patch"},
    }
    # By default the operator manages its own namespace only: a Role, no cluster-wide writes.
    operator = _rules(one(default_docs, "Role", "-operator"))
    assert operator[("", "pods")] == {"get", "list", "watch", "create", "delete"}
    assert operator[("kubechat.dev", "modeldeployments/status")] == {"get", "patch"}
    # blockOwnerDeletion on the pods' ownerReference (OwnerReferencesPermissionEnforcement)
    assert operator[("kubechat.dev", "modeldeployments/finalizers")] == {"update"}
    assert not find(default_docs, "ClusterRole", "-operator")
    (cluster,) = find(default_docs, "ClusterRole")
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in cluster["rules"])
    for role in find(default_docs, "Role") + find(default_docs, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]
            assert "secrets" not in rule["resources"], role["metadata"]


def test_cluster_wide_operator_uses_a_cluster_role(all_on_docs: list[dict]) -> None:
    role = _rules(one(all_on_docs, "ClusterRole", "-operator"))
    assert role[("", "pods")] == {"get", "list", "watch", "create", "delete"}
    assert role[("kubechat.dev", "modeldeployments/finalizers")] == {"update"}
    args = one(all_on_docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert arg_value(args["args"], "--namespace") is None  # all namespaces


def test_network_policy_admits_only_gateway_ui_and_scrapers_to_workers(
    default_docs: list[dict],
) -> None:
    policy = one(default_docs, "NetworkPolicy", "-workers")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    # The operator's worker pods carry these labels, so the policy selects them.
    assert selector.items() <= COMMON_LABELS.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": WORKER_PORT, "protocol": "TCP"}]
    components = [
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for p in rule["from"]
        if "podSelector" in p
    ]
    assert components == ["gateway", "ui"]
    gateway_pods = one(default_docs, "Deployment", "-gateway")["spec"]["template"]["metadata"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= gateway_pods["labels"].items()
    scrapers = [p for p in rule["from"] if "podSelector" not in p]
    assert scrapers == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The operator admits the same scrapers, on its metrics port only (probes need no rule).
    operator = one(default_docs, "NetworkPolicy", "-operator")
    (operator_rule,) = operator["spec"]["ingress"]
    assert operator_rule["from"] == scrapers
    metrics_port = _container_port(default_docs, "operator", "metrics")
    assert operator_rule["ports"] == [{"port": metrics_port, "protocol": "TCP"}]
    without_scrapers = render(sets=("networkPolicy.scrapers=null",))
    operator = one(without_scrapers, "NetworkPolicy", "-operator")
    assert "ingress" not in operator["spec"]  # deny all ingress


def _container_port(docs: list[dict], role: str, name: str) -> int:
    spec = one(docs, "Deployment", f"-{role}")["spec"]["template"]["spec"]
    (port,) = [p for p in spec["containers"][0]["ports"] if p["name"] == name]
    return port["containerPort"]


def test_gateway_requires_api_keys_from_its_secret(all_on_docs: list[dict]) -> None:
    secret = one(all_on_docs, "Secret", "-api-keys")

    keys = base64.b64decode(secret["data"]["api-keys"]).decode().splitlines()
    assert keys == ["sk-first-key", "sk-second-key"]
    spec = one(all_on_docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    key_file = arg_value(container["args"], "--api-key-file")
    mount = next(m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert key_file.rsplit("/", 1)[1] in secret["data"]
    assert "--protect-metrics" in container["args"]
    # all-on's operator is cluster-wide: the gateway reads every namespace
    assert arg_value(container["args"], "--lease-store") == "kubernetes:*"


def test_default_gateway_generates_a_key() -> None:
    (secret,) = [d for d in render() if d["kind"] == "Secret"]

    (key,) = base64.b64decode(secret["data"]["api-keys"]).decode().splitlines()
    assert key.startswith("sk-kubechat-") and len(key) > 40


def test_ingresses_serve_tls_for_gateway_and_ui(all_on_docs: list[dict]) -> None:
    hosts = {}
    for ingress in find(all_on_docs, "Ingress"):
        (tls,) = ingress["spec"]["tls"]
        (rule,) = ingress["spec"]["rules"]
        assert tls["hosts"] == [rule["host"]]
        backend = rule["http"]["paths"][0]["backend"]["service"]["name"]
        hosts[rule["host"]] = backend
        one(all_on_docs, "Service", backend[len("kc-kubechat") :])
    assert hosts == {"api.example.com": "kc-kubechat-gateway", "chat.example.com": "kc-kubechat-ui"}


def test_gateway_pdb_and_monitors(all_on_docs: list[dict]) -> None:
    pdb = one(all_on_docs, "PodDisruptionBudget", "-gateway")
    assert pdb["spec"]["minAvailable"] == 2
    monitor = one(all_on_docs, "ServiceMonitor")
    service = one(all_on_docs, "Service", "-gateway")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pod_monitor = one(all_on_docs, "PodMonitor", "-workers")
    assert pod_monitor["spec"]["namespaceSelector"]["matchNames"] == ["models", "models-b"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= COMMON_LABELS.items()
    assert pod_monitor["metadata"]["labels"]["release"] == "prometheus"
    # The operator's PodMonitor scrapes its metrics port in the release's namespace.
    operator_monitor = one(all_on_docs, "PodMonitor", "-operator")
    operator_pods = one(all_on_docs, "Deployment", "-operator")["spec"]["template"]["metadata"]
    selector = operator_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= operator_pods["labels"].items()
    (endpoint,) = operator_monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert operator_monitor["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize("which", ["defaults", "all-on"])
def test_operator_serves_metrics_and_is_probed_on_kopfs_health_endpoint(
    which: str, request
) -> None:
    docs = request.getfixturevalue("default_docs" if which == "defaults" else "all_on_docs")
    container = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports) == {"metrics", "health"} and len(set(ports.values())) == 2
    args = container["args"]
    assert int(arg_value(args, "--metrics-port")) == ports["metrics"]
    assert int(arg_value(args, "--health-port")) == ports["health"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_operator_metrics_and_health_ports_must_differ() -> None:
    result = helm("template", "kc", str(CHART), "--set", "operator.healthPort=8080", check=False)
    assert result.returncode != 0
    assert "operator.metricsPort and operator.healthPort must differ" in result.stderr


def test_prometheus_rule_carries_the_shipped_alert_file(all_on_docs: list[dict]) -> None:
    rule = one(all_on_docs, "PrometheusRule")
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == shipped
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "KubechatNoLiveWorker",
        "KubechatHighErrorRatio",
        "KubechatHeartbeatLost",
        "KubechatHeldRequestTimedOut",
    }


def test_dashboard_config_map_is_labelled_for_grafana(all_on_docs: list[dict]) -> None:
    cm = one(all_on_docs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["kubechat.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert dashboard["uid"] == "kubechat-overview"


def test_options_off_render_less(default_docs: list[dict]) -> None:
    kinds = {d["kind"] for d in default_docs}
    assert not kinds & {
        "Ingress",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ModelDeployment",
    }
    docs = render(
        sets=(
            "ui.enabled=false",
            "gateway.enabled=false",
            "networkPolicy.enabled=false",
            "grafana.dashboard.enabled=false",
        )
    )
    assert sorted(pod_specs(docs)) == ["kc-kubechat-operator"]
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    }


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("gateway.replicas=-1", "/gateway/replicas"),
        ("operator.replicas=2", "/operator/replicas"),
        ("gateway.auth.keys[0]=short", "/gateway/auth/keys/0"),
        ("ui.modelListMode=sometimes", "/ui/modelListMode"),
        ("gateway.tyop=1", "tyop"),
        ("workers.serviceAccount.name=Not_A_Name", "/workers/serviceAccount/name"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    result = helm("template", "kc", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_notes_tell_how_to_reach_endpoint_ui_and_dashboard() -> None:
    out = helm("install", "kc", str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl port-forward -n chat svc/kc-kubechat-gateway 8000:80" in notes
    assert "OPENAI_BASE_URL=http://127.0.0.1:8000/v1" in notes
    assert "secret -n chat kc-kubechat-api-keys" in notes
    assert "svc/kc-kubechat-ui 7860:80" in notes
    assert "kc-kubechat-dashboard" in notes
    with_ingress = helm(
        "install",
        "kc",
        str(CHART),
        "-n",
        NAMESPACE,
        "--dry-run=client",
        "--values",
        str(ALL_ON_VALUES),
    ).stdout.split("NOTES:", 1)[1]
    assert "OPENAI_BASE_URL=https://api.example.com/v1" in with_ingress
    assert "https://chat.example.com/" in with_ingress


def test_rendered_text_has_no_empty_documents() -> None:
    text = render_text(ALL_ON_VALUES)
    assert "\n---\n---" not in text
    assert all(doc for doc in yaml.safe_load_all(text))


@pytest.mark.parametrize("which", ["defaults", "all-on"])
def test_every_role_accepts_the_arguments_the_chart_gives_it(which: str, request) -> None:
    docs = request.getfixturevalue("default_docs" if which == "defaults" else "all_on_docs")
    for name, spec in pod_specs(docs).items():
        role, *args = spec["containers"][0]["args"]
        assert name.endswith(f"-{role}")
        parser = argparse.ArgumentParser(prog=f"kubechat {role}", exit_on_error=False)
        importlib.import_module(COMMANDS[role][0]).configure(parser)
        parsed = parser.parse_args(args)  # an unknown flag or a bad value raises
        if role != "operator":
            assert parsed.host == "0.0.0.0"
            assert parsed.port == spec["containers"][0]["ports"][0]["containerPort"]


def test_open_gateway_has_no_key_secret_and_no_key_flag() -> None:
    docs = render(sets=("gateway.auth.enabled=false",))
    assert not find(docs, "Secret")
    gateway = one(docs, "Deployment", "-gateway")
    pod = gateway["spec"]["template"]
    assert "annotations" not in pod["metadata"]
    assert arg_value(pod["spec"]["containers"][0]["args"], "--api-key-file") is None
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_existing_key_secret_is_used_not_created() -> None:
    docs = render(sets=("gateway.auth.existingSecret=my-keys",))
    assert not find(docs, "Secret")
    spec = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == ["my-keys"]


def _operator_args(docs: list[dict]) -> list[str]:
    operator = one(docs, "Deployment", "-operator")
    return operator["spec"]["template"]["spec"]["containers"][0]["args"]


def test_worker_pull_secrets_default_to_the_charts_own(all_on_docs: list[dict]) -> None:
    flag = "--worker-image-pull-secret="
    assert [a for a in _operator_args(all_on_docs) if a.startswith(flag)] == [
        f"{flag}registry-credentials"
    ]
    docs = render(
        ALL_ON_VALUES,
        sets=("workers.imagePullSecrets[0].name=gpu-registry",),
    )
    assert [a for a in _operator_args(docs) if a.startswith(flag)] == [f"{flag}gpu-registry"]


def test_no_pull_secrets_no_flag(default_docs: list[dict]) -> None:
    assert not [a for a in _operator_args(default_docs) if "pull-secret" in a]


def test_operator_may_block_owner_deletion_as_its_pods_do(default_docs: list[dict]) -> None:
    """The operator's pods set blockOwnerDeletion; with OwnerReferencesPermissionEnforcement
    (OpenShift) their creation needs update on modeldeployments/finalizers."""
    from kubechat.manifests import load_manifests
    from kubechat.operator.pods import PodSettings, render_pod
    from kubechat.plan import plan_deployment

    (md,) = load_manifests([REPO / "examples" / "demo-cluster.yaml"])
    worker = plan_deployment(md).workers[0]
    pod = render_pod(worker, "demo-x", {"name": "demo", "uid": "u"}, PodSettings())
    (owner,) = pod["metadata"]["ownerReferences"]
    assert owner["blockOwnerDeletion"] is True
    operator = _rules(one(default_docs, "Role", "-operator"))
    assert "update" in operator[("kubechat.dev", "modeldeployments/finalizers")]


def test_service_monitor_authenticates_only_when_metrics_are_protected(
    all_on_docs: list[dict],
) -> None:
    (endpoint,) = one(all_on_docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "kc-kubechat-api-keys", "key": "scrape-key"},
    }
    secret = one(all_on_docs, "Secret", "-api-keys")["data"]
    assert base64.b64decode(secret["scrape-key"]).decode() == "sk-first-key"
    assert base64.b64decode(secret["api-keys"]).decode().splitlines()[0] == "sk-first-key"

    open_metrics = render(sets=("metrics.serviceMonitor.enabled=true",))
    (endpoint,) = one(open_metrics, "ServiceMonitor")["spec"]["endpoints"]
    assert "authorization" not in endpoint

    theirs = render(
        sets=(
            "metrics.serviceMonitor.enabled=true",
            "gateway.auth.protectMetrics=true",
            "gateway.auth.existingSecret=my-keys",
            "gateway.auth.scrapeSecretKey=api-keys",
        )
    )
    (endpoint,) = one(theirs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "my-keys", "key": "api-keys"}


def test_a_scrape_key_named_like_the_key_list_is_not_written_twice() -> None:
    docs = render(
        sets=("gateway.auth.scrapeSecretKey=api-keys", "gateway.auth.keys={sk-only-one-key}")
    )
    assert set(one(docs, "Secret", "-api-keys")["data"]) == {"api-keys"}


def _lease_stores(docs: list[dict]) -> set[str]:
    return {
        arg_value(
            one(docs, "Deployment", f"-{role}")["spec"]["template"]["spec"]["containers"][0][
                "args"
            ],
            "--lease-store",
        )
        for role in ("gateway", "ui")
    }


def _discovery(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in find(docs, kind) if d["metadata"]["name"] == "kc-kubechat-discovery"]


def test_discovery_reads_every_namespace_of_a_cluster_wide_operator(
    all_on_docs: list[dict],
) -> None:
    from kubechat.discovery.stores import open_store

    (store,) = _lease_stores(all_on_docs)
    assert store == "kubernetes:*" and open_store(store, reader=True).scopes == [None]
    assert _discovery(all_on_docs, "Role") == []
    (role,) = _discovery(all_on_docs, "ClusterRole")
    assert _rules(role) == {
        ("coordination.k8s.io", "leases"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("kubechat.dev", "modeldeployments"): {"list", "patch"},
    }
    (binding,) = _discovery(all_on_docs, "ClusterRoleBinding")
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert {s["name"] for s in binding["subjects"]} == {"kc-kubechat-gateway", "kc-kubechat-ui"}


def test_discovery_reads_each_namespace_the_operator_watches() -> None:
    from kubechat.discovery.stores import open_store

    docs = render(sets=("modelNamespace=models", "operator.watchNamespaces={models-b,models-c}"))
    (store,) = _lease_stores(docs)
    assert store == "kubernetes:models,models-b,models-c"
    assert open_store(store, reader=True).scopes == ["models", "models-b", "models-c"]
    roles = {r["metadata"]["namespace"]: _rules(r) for r in _discovery(docs, "Role")}
    assert set(roles) == {"models", "models-b", "models-c"}
    bindings = _discovery(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(roles)
    assert not _discovery(docs, "ClusterRole")


def test_a_public_chat_page_needs_a_login_or_an_explicit_yes() -> None:
    on = ("--set", "ui.ingress.enabled=true")
    refused = helm("template", "kc", str(CHART), *on, check=False)
    assert refused.returncode != 0
    assert "set ui.authSecret" in refused.stderr
    for extra in ("ui.authSecret=logins", "ui.ingress.allowAnonymous=true"):
        docs = render(sets=("ui.ingress.enabled=true", extra))
        assert one(docs, "Ingress", "-ui")["spec"]["rules"][0]["host"]


def test_ingresses_do_not_buffer_streams_by_default() -> None:
    docs = render(sets=("gateway.ingress.enabled=true", "ui.ingress.allowAnonymous=true",
                        "ui.ingress.enabled=true"))  # fmt: skip
    for suffix in ("-gateway", "-ui"):
        annotations = one(docs, "Ingress", suffix)["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
