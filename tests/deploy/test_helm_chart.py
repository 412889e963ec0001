"""The Kubernetes deployment (issue 16, item 5), checked as far as a machine without a cluster or a `helm`
binary allows:

- every shipped values file of deploy/helm/eap, merged over the chart's values.yaml as Helm merges them,
  against the chart's values.schema.json (python jsonschema), and the schema rejects what it must;
- deploy/helm/dagster-values.yaml (for Dagster's official chart) against our contract schema;
- the chart rendered by deploy/helm/render (Go text/template + sprig, Helm's engine without a cluster;
  needs Debian's golang-go and golang-github-masterminds-sprig-dev) and every object validated strictly
  against the Kubernetes 1.33 OpenAPI schemas that `kubernetes-validate` ships offline.
Not exercised: installing into a cluster, Dagster's own chart templates, the NetworkPolicy enforcement."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

HELM = Path(__file__).resolve().parents[2] / "deploy" / "helm"
CHART = HELM / "eap"
K8S_VERSION = "1.33.0"
GOPATH = "/usr/share/gocode"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge recursively, anything else (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _schema() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


VALUES_FILES = [CHART / "values.yaml", *sorted((CHART / "examples").glob("*.yaml"))]


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_every_shipped_values_file_matches_the_chart_schema(path: Path) -> None:
    values = _merge(_load(CHART / "values.yaml"), _load(path))
    errors = [e.message for e in _schema().iter_errors(values)]
    assert not errors, errors


@pytest.mark.parametrize(("override", "expected"), [
    ({"env": {"EAP_JWT_SECRET": "inline"}}, "EAP_JWT_SECRET"),          # secrets only by reference
    ({"env": {"EAP_ENV": "dev"}}, "'prod' was expected"),
    ({"vllm": {"tiers": [{"name": "light", "alias": "eap-light", "model": "meta/Llama-3", "path": "/models/x",
                          "gpus": 1, "maxModelLen": 4096}]}}, "does not match"),
    ({"api": {"autoscaling": {"maxReplicas": 0}}}, "less than the minimum"),
    ({"networkPolicy": {"database": {"cidr": "db.plant.local"}}}, "does not match"),
    ({"litellm": {"masterKey": "sk-123"}}, "Additional properties"),
])
def test_the_schema_rejects_inline_secrets_and_wrong_values(override: dict[str, Any], expected: str) -> None:
    values = _merge(_load(CHART / "values.yaml"), override)
    errors = [e.message for e in _schema().iter_errors(values)]
    assert any(expected in m for m in errors), errors


def test_dagster_values_use_the_k8s_run_launcher_and_our_image_with_secrets_by_reference() -> None:
    values = _load(HELM / "dagster-values.yaml")
    schema = json.loads((HELM / "dagster-values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert not [e.message for e in validator.iter_errors(values)]
    ours = _load(CHART / "values.yaml")["image"]["repository"]
    assert values["dagster-user-deployments"]["deployments"][0]["image"]["repository"] == ours
    bad = copy.deepcopy(values)
    bad["runLauncher"]["type"] = "DefaultRunLauncher"
    bad["postgresql"]["postgresqlPassword"] = "inline"
    messages = [e.message for e in validator.iter_errors(bad)]
    assert any("K8sRunLauncher" in m for m in messages) and len(messages) >= 2, messages


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("go") or not Path(GOPATH, "src/github.com/Masterminds/sprig").is_dir():
        pytest.skip("Go and sprig from Debian (golang-go, golang-github-masterminds-sprig-dev) render the chart")
    out = tmp_path_factory.mktemp("render") / "render"
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOCACHE=str(out.parent / "gocache"), CGO_ENABLED="0")
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=HELM / "render", env=env, check=True,
                   capture_output=True, timeout=600)
    return out


def _render(renderer: Path, *values: Path) -> list[dict[str, Any]]:
    args = [str(renderer), str(CHART)]
    for v in values:
        args += ["-f", str(v)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def _by(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.deploy
def test_rendered_chart_objects_are_valid_kubernetes_objects(renderer: Path) -> None:
    import kubernetes_validate

    docs = _render(renderer)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert not [d for d in docs if d["kind"] == "Secret"], "secrets are referenced, never rendered"
    deployments = _by(docs, "Deployment")
    assert set(deployments) == {"eap-api", "eap-litellm", "eap-vllm-light", "eap-vllm-standard", "eap-vllm-heavy"}
    api = deployments["eap-api"]["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "eap-secrets"}}]
    assert api["securityContext"]["runAsNonRoot"] is True and api["securityContext"]["runAsUser"] == 10001
    assert container["args"][:2] == ["serve", "api"]
    assert "eap-api" in _by(docs, "HorizontalPodAutoscaler") and "eap-api" in _by(docs, "PodDisruptionBudget")
    policies = _by(docs, "NetworkPolicy")
    deny = policies["eap-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "egress" not in deny
    assert policies["eap-vllm"]["spec"]["egress"] == []      # model servers talk to nobody
    api_egress = policies["eap-api"]["spec"]["egress"]
    assert all("ipBlock" not in peer or peer["ipBlock"]["cidr"] != "0.0.0.0/0" for rule in api_egress
               for peer in rule["to"])
    litellm_cfg = yaml.safe_load(_by(docs, "ConfigMap")["eap-litellm"]["data"]["config.yaml"])
    assert {m["model_name"] for m in litellm_cfg["model_list"]} == {"eap-light", "eap-standard", "eap-heavy"}
    assert all(m["litellm_params"]["api_base"].startswith("http://eap-vllm-") for m in litellm_cfg["model_list"])
    # The validation can fail: a broken object is rejected.
    broken = copy.deepcopy(deployments["eap-api"])
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.deploy
def test_site_example_renders_without_autoscaling_and_one_model_tier(renderer: Path) -> None:
    import kubernetes_validate

    docs = _render(renderer, CHART / "examples" / "values-site.yaml")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert not _by(docs, "HorizontalPodAutoscaler")
    assert _by(docs, "Deployment")["eap-api"]["spec"]["replicas"] == 2
    assert {n for n in _by(docs, "Deployment") if n.startswith("eap-vllm-")} == {"eap-vllm-light"}
    db_rule = _by(docs, "NetworkPolicy")["eap-api"]["spec"]["egress"][0]
    assert db_rule["to"] == [{"ipBlock": {"cidr": "10.20.0.15/32"}}]
