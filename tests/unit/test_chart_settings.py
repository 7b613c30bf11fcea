"""What the Helm chart passes each process (flags and variables) builds its settings object: the chart's
flags and variables are the ones the settings models read, with values they accept."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmserve.gateway.cli import load_settings
from llmserve.settings import OperatorSettings
from tests.support.helm import build_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"


@pytest.fixture(scope="module")
def helm() -> str:
    return build_helm()


def containers(helm: str, *values: str) -> dict[str, dict[str, Any]]:
    """The operator's and the gateway's container, as `helm template` renders them."""
    args = [helm, "template", "demo", str(CHART), "--namespace", "llm"]
    for value in values:
        args += ["--set", value]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPO).stdout
    out = {}
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "Deployment":
            component = doc["metadata"]["name"].rsplit("-", 1)[-1]
            out[component] = doc["spec"]["template"]["spec"]["containers"][0]
    return out


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables; those from the pod's fields (POD_NAMESPACE) as the kubelet sets them."""
    return {e["name"]: e.get("value", "llm") for e in container.get("env", [])}


def test_the_chart_s_gateway_builds_its_settings(helm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = containers(helm, "gateway.apiKeySecretNames={team-a}", "gateway.watchNamespaces={ai}")[
        "gateway"
    ]
    for name, value in plain_env(gateway).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(gateway["args"])
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 8080, 9091)
    assert (settings.api_keys_namespace, settings.key_secret, settings.namespaces) == (
        "llm",
        ("team-a",),
        ("ai",),
    )
    assert str(settings.engine_key_ref) == "llm/demo-llmserve-engine-key-master"
    assert (settings.shutdown_delay, settings.drain_timeout) == (10.0, 600.0)


def test_the_chart_s_operator_builds_its_settings(helm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = containers(helm, "networkPolicy.enabled=false", "cost.usdPerGpuHour.NVIDIA-L4=0.4")["operator"]
    for name, value in plain_env(operator).items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.namespace == "llm"
    assert str(settings.engine_key_ref()) == "llm/demo-llmserve-engine-key-master"
    assert settings.engine_network_policy is False
    assert settings.prices().price("NVIDIA-L4") == 0.4
    assert settings.engine_ingress_peers()  # the chart's peers parse
    assert settings.lease_name.startswith("demo-llmserve")


def test_the_chart_s_operator_reads_its_own_release_s_gateway_and_its_queue(
    helm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = containers(helm, "gateway.metricsPort=9300")  # the gateway queue is on by default
    for name, value in plain_env(rendered["operator"]).items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.gateway_namespace == "llm" and settings.gateway_metrics_port == 9300
    assert set(settings.gateway_selector.split(",")) == {
        "app.kubernetes.io/name=llmserve",
        "app.kubernetes.io/instance=demo",
        "app.kubernetes.io/component=gateway",
    }
    assert load_settings(rendered["gateway"]["args"]).queue_when_full is True
    without_gateway = containers(helm, "gateway.enabled=false")["operator"]
    assert plain_env(without_gateway)["LLMSERVE_GATEWAY_SELECTOR"] == ""  # engines only


def test_the_chart_s_gateway_queue_takes_its_bounds_and_can_be_turned_off(helm: str) -> None:
    queued = load_settings(
        containers(helm, "gateway.queueSize=1024", "gateway.queueTimeoutSeconds=15")["gateway"]["args"]
    )
    assert (queued.queue_when_full, queued.queue_size, queued.queue_timeout) == (True, 1024, 15.0)
    engine = load_settings(containers(helm, "gateway.queueWhenFull=false")["gateway"]["args"])
    assert engine.queue_when_full is False
