"""The Helm chart lints, renders for the shapes users run, and its manifests decode strictly into the Kubernetes
API types (kubecheck); bad values are refused with one line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from ops_tools import DEPLOY

pytestmark = pytest.mark.tools
CHART = DEPLOY / "helm" / "bytewax-speechmatics"
KEY = ("speechmatics.apiKey=test-key",)


def helm(tool: Callable[[str], Path], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("helm")), *args], capture_output=True, text=True, timeout=120)


def render(tool: Callable[[str], Path], *values: str) -> str:
    sets = [arg for v in values for arg in ("--set", v)]
    done = helm(tool, "template", "calls", str(CHART), "--namespace", "speech", *sets)
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(manifest: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def kubecheck(tool: Callable[[str], Path], manifest: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("kubecheck"))], input=manifest, capture_output=True, text=True, timeout=60)


def test_the_chart_lints(tool: Callable[[str], Path]) -> None:
    for values in (KEY, ("worker.enabled=true",)):
        done = helm(tool, "lint", "--strict", str(CHART), *[a for v in values for a in ("--set", v)])
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [
    KEY,
    (*KEY, "configuration.processesCount=3", "configuration.workersPerProcess=2", "recovery.partsCount=6",
     "podMonitor.enabled=true"),
    ("worker.enabled=true", "recovery.enabled=false", "podDisruptionBudget.enabled=false"),
    ("speechmatics.existingSecret=sm-key", "recovery.persistence.existingClaim=shared", "topics.create=false"),
])
def test_rendered_manifests_are_valid_kubernetes_objects(tool: Callable[[str], Path], values: tuple[str, ...]) -> None:
    done = kubecheck(tool, render(tool, *values))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_refuses_an_unknown_field(tool: Callable[[str], Path]) -> None:
    manifest = render(tool, *KEY).replace("podManagementPolicy:", "podManagementPolicyy:")
    done = kubecheck(tool, manifest)
    assert done.returncode == 1 and 'unknown field "podManagementPolicyy"' in done.stdout


def test_a_cluster_of_three_processes(tool: Callable[[str], Path]) -> None:
    docs = documents(render(tool, *KEY, "configuration.processesCount=3", "configuration.workersPerProcess=2",
                            "recovery.partsCount=6", "podMonitor.enabled=true"))
    sts = docs["StatefulSet/calls-bytewax-speechmatics"]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["bytewax-speechmatics", "run"]
    assert "--workers=2" in container["args"] and "--recovery-partitions=6" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SPEECHMATICS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "calls-bytewax-speechmatics-api-key"
    assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == "calls-bytewax-speechmatics"
    assert env["BWSM_ADMIN_PORT"]["value"] == "3031"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    hosts = docs["ConfigMap/calls-bytewax-speechmatics-hostfile"]["data"]["hostfile.txt"].split()
    assert hosts == [f"calls-bytewax-speechmatics-{i}.calls-bytewax-speechmatics.speech.svc:2101" for i in range(3)]
    claim = docs["PersistentVolumeClaim/calls-bytewax-speechmatics-recovery"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert docs["PodMonitor/calls-bytewax-speechmatics"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert docs["Secret/calls-bytewax-speechmatics-api-key"]["stringData"] == {"api-key": "test-key"}


def test_the_local_worker_is_optional_and_used_when_enabled(tool: Callable[[str], Path]) -> None:
    assert "Deployment/calls-bytewax-speechmatics-worker" not in documents(render(tool, *KEY))
    docs = documents(render(tool, "worker.enabled=true"))
    assert "Deployment/calls-bytewax-speechmatics-worker" in docs
    container = docs["StatefulSet/calls-bytewax-speechmatics"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPEECHMATICS_BATCH_URL"] == "http://calls-bytewax-speechmatics-worker:18000/v2"


@pytest.mark.parametrize(("values", "message"), [
    ((), "set speechmatics.existingSecret"),
    ((*KEY, "configuration.processesCount=2", "configuration.workersPerProcess=4"),
     "recovery.partsCount (4) must be at least processesCount x workersPerProcess (8)"),
    ((*KEY, "configuration.processesCount=2", "recovery.persistence.accessModes={ReadWriteOnce}"),
     "must include ReadWriteMany"),
])
def test_values_that_cannot_work_are_refused(tool: Callable[[str], Path], values: tuple[str, ...],
                                             message: str) -> None:
    done = helm(tool, "template", "calls", str(CHART), *[a for v in values for a in ("--set", v)])
    assert done.returncode != 0 and message in done.stderr
