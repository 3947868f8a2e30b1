"""deploy/k8s/components/monitoring (SPEC §12): rendered with the production overlay and validated
offline like the rest; every alert and dashboard expression checked with promtool (Debian's
`prometheus` package, unpacked into .venv by `make test`), the alerts exercised by promtool's rule
unit tests, and every metric they read one that escalator exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from escalator.metrics import Metrics
from tests.conftest import REPO
from tests.test_deploy import render, validate

PROMTOOL = Path(sys.executable).parent / "promtool"
COMPONENT = REPO / "deploy/k8s/components/monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: `make test` unpacks it from Debian's prometheus package (make .venv/bin/promtool)")
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    """The production overlay with the monitoring component, as an operator would include it."""
    root = tmp_path_factory.mktemp("monitored")
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: escalator\n"
        f"resources:\n  - {os.path.relpath(REPO / 'deploy/k8s/overlays/production', root)}\n"
        f"components:\n  - {os.path.relpath(COMPONENT, root)}\n"
    )
    text = render(str(root))
    result = validate(text)
    assert result.returncode == 0, result.stdout + result.stderr  # the core resources strictly; the operator's kinds are not in its schemas
    return [d for d in YAML(typ="safe").load_all(text) if d]


def of_kind(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def exported_metrics() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}.get(family.type, ())
        names.update(family.name + s for s in suffixes)
    return names


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(escalator_[a-z_]+)\b", expr))


def test_the_component_renders_with_the_production_overlay_in_its_namespace(rendered: list[dict]) -> None:
    for kind in ("PrometheusRule", "PodMonitor", "ConfigMap"):
        assert any(d["kind"] == kind for d in rendered), kind
    monitor = of_kind(rendered, "PodMonitor")
    assert monitor["metadata"]["namespace"] == "escalator" and monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    deployment = of_kind(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())  # it selects our pods
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "http" in ports


def test_every_alert_of_spec_12_is_there_and_checks_with_promtool(rendered: list[dict], tmp_path: Path) -> None:
    spec = of_kind(rendered, "PrometheusRule")["spec"]
    rules = [r for g in spec["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == {
        "EscalatorNoReadyReplica", "EscalatorOutboxBacklogGrowing", "EscalatorBreakerOpen", "EscalatorIncidentsRejected",
        "EscalatorWindowsLate", "EscalatorHeartbeatSilent",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"], rule["alert"]
        assert metrics_in(rule["expr"]) <= exported_metrics(), rule["alert"]
    (tmp_path / "rules.yaml").write_text(json.dumps(spec))
    checked = promtool("check", "rules", str(tmp_path / "rules.yaml"))
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked.stdout + checked.stderr


def test_each_alert_fires_on_its_trouble_and_not_otherwise(rendered: list[dict], tmp_path: Path) -> None:
    spec = of_kind(rendered, "PrometheusRule")["spec"]
    for group in spec["groups"]:  # the unit tests check when and with which labels; the texts are checked above
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(json.dumps(spec))
    shutil.copy(REPO / "tests/monitoring/alerts_test.yaml", tmp_path / "alerts_test.yaml")
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_the_dashboard_reads_only_what_escalator_exports_and_every_query_parses(rendered: list[dict], tmp_path: Path) -> None:
    config = next(d for d in rendered if d["metadata"]["name"] == "escalator-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["escalator.json"])
    assert dashboard == json.loads((COMPONENT / "dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 12
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*(metrics_in(e) for e in exprs))
    assert used <= exported_metrics(), used - exported_metrics()
    # SPEC §5's metrics all have a panel: paging, acknowledgements, windows, breakers, the outbox
    for name in ("escalator_pages_total", "escalator_acknowledgements_total", "escalator_window_lateness_seconds_bucket",
                 "escalator_breaker_state", "escalator_outbox_backlog", "escalator_open_incidents", "escalator_ready"):
        assert name in used, name
    # promtool parses PromQL in rule files: each query as a recording rule
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard_rules.yaml").write_text(json.dumps(rules))
    checked = promtool("check", "rules", str(tmp_path / "dashboard_rules.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
