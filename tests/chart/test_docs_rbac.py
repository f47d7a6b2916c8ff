"""The RBAC the docs name is the RBAC the chart grants: docs/kubernetes.md's table and the README's
worker sentence against the rendered Roles."""

from __future__ import annotations

import re

from tests.chart.chart_tools import REPO, one

GUIDE = REPO / "docs" / "kubernetes.md"
README = REPO / "README.md"
Rules = dict[tuple[str, str], set[str]]


def chart_rules(*roles: dict) -> Rules:
    """(API group, resource) -> verbs over every rule of ``roles``."""
    out: Rules = {}
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def documented_rules() -> dict[str, Rules]:
    """The guide's RBAC table: account (first word of its cell) -> its rules."""
    out: dict[str, Rules] = {}
    for line in GUIDE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[3] or cells[0] in ("account", "---"):
            continue
        account, group, resource, verbs = cells
        if not re.fullmatch(r"[a-z]+(, [a-z]+)*", verbs):
            continue  # another table
        group = "" if group == "core" else group.strip("`")
        rules = out.setdefault(account.split()[0].rstrip(","), {})
        rules.setdefault((group, resource.strip("`")), set()).update(verbs.split(", "))
    return out


def test_guide_table_matches_the_charts_roles(default_docs: list[dict]) -> None:
    documented = documented_rules()
    assert set(documented) == {"operator", "worker", "gateway"}
    assert documented["worker"] == chart_rules(one(default_docs, "Role", "-worker"))
    assert documented["gateway"] == chart_rules(one(default_docs, "Role", "-discovery"))
    operator = chart_rules(
        one(default_docs, "Role", "-operator"),
        one(default_docs, "ClusterRole", "-operator-discovery"),
    )
    assert documented["operator"] == operator


def test_readme_names_the_worker_lease_verbs_of_the_chart(default_docs: list[dict]) -> None:
    text = " ".join(README.read_text().split())
    found = re.search(r"allowed to `get` its Pod and (.+?) Leases", text)
    assert found, "the README's worker RBAC sentence moved"
    verbs = set(re.findall(r"`([a-z]+)`", found.group(1)))
    role = chart_rules(one(default_docs, "Role", "-worker"))
    assert verbs == role[("coordination.k8s.io", "leases")]
    assert role[("", "pods")] == {"get"}
