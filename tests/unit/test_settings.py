"""Each process's settings: built once from flags and environment, one namespace variable (with the
older one as fallback), bad values refused with the variable named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmserve.controller.leader import LeaseSettings
from llmserve.gateway.cli import build_parser
from llmserve.render.engine_key import master_secret_ref
from llmserve.settings import GatewayEnvironment, OperatorSettings, pod_namespace


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAMESPACE", "LLMSERVE_OPERATOR_NAMESPACE", "LLMSERVE_ENGINE_KEY_SECRET",
                 "LLMSERVE_LEASE_NAMESPACE", "LLMSERVE_KUBE_MAX_IN_FLIGHT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_pod_namespace_wins_over_the_older_operator_namespace_variable() -> None:
    both = {"POD_NAMESPACE": "ops", "LLMSERVE_OPERATOR_NAMESPACE": "old"}
    assert pod_namespace(both) == "ops"
    assert pod_namespace({"LLMSERVE_OPERATOR_NAMESPACE": "old"}) == "old"
    assert pod_namespace({}) == "default"  # outside a cluster, with neither set


def test_every_operator_part_uses_the_one_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_OPERATOR_NAMESPACE", "llmserve-system")  # only the older name, as old charts
    settings = OperatorSettings()
    assert settings.namespace == "llmserve-system"
    assert LeaseSettings.from_settings(settings).namespace == "llmserve-system"
    assert master_secret_ref().namespace == "llmserve-system"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_COST_INTERVAL_SECONDS", "5")
    settings = OperatorSettings(metrics_port=0, namespaces=("ai",))
    assert (settings.metrics_port, settings.namespaces, settings.cost_interval_seconds) == (0, ("ai",), 5.0)


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_AUTOSCALER_METRICS_SOURCE", "graphite")
    with pytest.raises(ValidationError, match="autoscaler_metrics_source"):
        OperatorSettings()


def test_gateway_flags_default_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "edge")
    monkeypatch.setenv("LLMSERVE_ENGINE_KEY_SECRET", "ops/master")
    args = build_parser(GatewayEnvironment()).parse_args([])
    assert (args.keys_namespace, args.engine_key_secret, args.burst_namespace) == ("edge", "ops/master", "")
    assert build_parser(GatewayEnvironment()).parse_args(["--keys-namespace", "k"]).keys_namespace == "k"
