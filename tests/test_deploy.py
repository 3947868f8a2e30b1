"""deploy/k8s renders and validates strictly offline; the Dockerfile lints clean; the shipped ladders validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO

BIN = Path(sys.executable).parent
KUBERNETES = "1.37.0"


def render(target: str) -> str:
    result = subprocess.run([str(BIN / "kubectl"), "kustomize", str(REPO / target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def validate(manifests: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBERNETES, "-"],
        input=manifests, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("target", ["deploy/k8s/base", "deploy/k8s/overlays/production"])
def test_manifests_render_and_validate_strictly(target: str) -> None:
    result = validate(render(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource deployment/escalator" in result.stdout + result.stderr


def test_strict_validation_catches_a_misspelled_field() -> None:
    broken = render("deploy/k8s/base").replace("readOnlyRootFilesystem", "readOnlyRootFileSystem", 1)
    assert validate(broken).returncode != 0


def test_production_deployment_is_locked_down() -> None:
    docs = list(YAML(typ="safe").load_all(render("deploy/k8s/overlays/production")))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind in ("Deployment", "Service", "Ingress", "Job", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"):
        assert any(k == kind for k, _ in kinds), kind
    assert all(d["metadata"].get("namespace") == "escalator" for d in docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/escalator:0.1.0"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert pod["terminationGracePeriodSeconds"] >= 30
    # active-active: several replicas, a rollout never drops below them, a drain keeps one
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    replica_id = next(e for e in container["env"] if e["name"] == "ESCALATOR_REPLICA_ID")
    assert replica_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"database-url", "twilio-auth-token", "push-signing-key", "nats-password"} <= secrets
    assert not any(e.get("value") for e in container["env"])  # no secret inline
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("escalator-config"))
    assert all(url.startswith("tls://") and "@" not in url for url in config["data"]["ESCALATOR_NATS_URL"].split(","))
    assert config["data"]["ESCALATOR_NATS_USER"] == "escalator" and "PASSWORD" not in " ".join(config["data"])
    ca_mount = next(m for m in container["volumeMounts"] if m["name"] == "nats-ca")
    assert config["data"]["ESCALATOR_NATS_TLS_CA"].startswith(ca_mount["mountPath"] + "/")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]
    for source in policy["ingress"][0]["from"]:  # specific pods, never whole namespaces
        assert source["podSelector"]["matchLabels"] and source["namespaceSelector"]["matchLabels"]
    for rule in policy["egress"]:  # every way out names where it goes
        assert rule["to"], rule
    https = next(r for r in policy["egress"] if r["ports"] == [{"port": 443, "protocol": "TCP"}])
    assert {"10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16", "172.16.0.0/12"} <= set(https["to"][0]["ipBlock"]["except"])
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/twilio", "/api/v1"}  # /metrics and /readyz stay inside the cluster
    ladders = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("escalator-ladders"))
    assert set(ladders["data"]) == {"contacts.yaml", "after-hours.yaml"}
    job = next(d for d in docs if d["kind"] == "Job")
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == ladders["metadata"]["name"]  # the generated (hashed) name is wired through


def test_overlay_ladders_validate(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "escalator"), "ladder", "validate", str(REPO / "deploy/k8s/overlays/production/ladders"), "--offline"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_lints_clean_and_runs_as_non_root() -> None:
    result = subprocess.run([str(BIN / "hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (REPO / "Dockerfile").read_text()
    assert "USER 10001" in text and 'ENTRYPOINT ["escalator"]' in text and text.count("FROM ") == 2
    bad = subprocess.run([str(BIN / "hadolint"), "-"], input="FROM python\nRUN apt-get install curl\n", capture_output=True, text=True)
    assert bad.returncode != 0  # the linter does refuse a bad Dockerfile


def test_the_lock_files_pin_every_dependency_within_pyproject(tmp_path: Path) -> None:
    """requirements.lock (the image) and requirements-dev.lock (make test) pin each dependency that
    pyproject.toml names, at a version its range admits, with hashes."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def pins(name: str) -> dict[str, str]:
        text = (REPO / name).read_text()
        assert "--hash=sha256:" in text
        out = {}
        for line in text.splitlines():
            if "==" in line and not line.startswith((" ", "#")):
                package, version = line.split(" ")[0].split("==")
                out[package.lower().replace("_", "-").replace(".", "-")] = version
        return out

    for lock, requirements in (("requirements.lock", project["dependencies"]),
                               ("requirements-dev.lock", project["dependencies"] + project["optional-dependencies"]["dev"])):
        pinned = pins(lock)
        for raw in requirements:
            requirement = Requirement(raw)
            name = requirement.name.lower().replace("_", "-").replace(".", "-")
            assert name in pinned, f"{lock} does not pin {name}"
            assert requirement.specifier.contains(pinned[name], prereleases=True), (lock, raw, pinned[name])
