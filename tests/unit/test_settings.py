"""Each process's settings: built once from flags and environment, one namespace variable (with the
older one as fallback), bad values refused at start-up with the flag or variable named, and the
tables of docs/configuration.md generated from the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmserve import cli
from llmserve.controller.leader import LeaseSettings
from llmserve.gateway.cli import build_parser, load_settings
from llmserve.gateway.routing import Policy
from llmserve.gateway.settings import GatewaySettings
from llmserve.settings import OperatorSettings, burst_overrides, flag_name, pod_namespace

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# The gateway's flags and defaults before its settings object existed (argparse): each must keep its
# name and default, since the chart, the tests and users' scripts pass them.
GATEWAY_FLAG_DEFAULTS: dict[str, object] = {
    "--host": "127.0.0.1", "--port": 8080, "--static": None, "--burst-namespace": "", "--kubernetes": False,
    "--namespace": (), "--keys-namespace": "", "--key-secret": (), "--engine-key-secret": "",
    "--insecure-no-auth": False, "--max-body-bytes": 8 * 1024 * 1024, "--header-timeout": 15.0,
    "--body-timeout": 30.0, "--max-connections": 4096, "--connect-timeout": 3.0, "--read-timeout": 600.0,
    "--request-timeout": 0.0, "--shutdown-delay": 0.0, "--drain-timeout": 600.0,
    "--stream-idle-timeout": 120.0, "--max-attempts": 3, "--hold-timeout": 180.0, "--hold-queue": 256,
    "--scrape-interval": 1.0, "--routing": Policy.PREFIX, "--default-batch-slots": 256,
    "--prefix-load-factor": 1.25, "--queue-when-full": False, "--queue-size": 256, "--queue-timeout": 60.0,
    "--metrics-port": 9091, "--metrics-host": "127.0.0.1", "--no-access-log": False, "--log-level": "INFO",
}  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAMESPACE", "LLMSERVE_OPERATOR_NAMESPACE", "LLMSERVE_ENGINE_KEY_SECRET",
                 "LLMSERVE_LEASE_NAMESPACE", "LLMSERVE_KUBE_MAX_IN_FLIGHT", "LLMSERVE_PORT"):  # fmt: skip
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
    assert settings.engine_key_ref().namespace == "llmserve-system"
    [peer] = settings.engine_ingress_peers()
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "llmserve-system"}


def test_an_empty_pod_namespace_falls_back_to_the_older_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "")
    monkeypatch.setenv("LLMSERVE_OPERATOR_NAMESPACE", "old")
    assert OperatorSettings().namespace == "old"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_COST_INTERVAL_SECONDS", "5")
    settings = OperatorSettings(metrics_port=0, namespaces=("ai",))
    assert (settings.metrics_port, settings.namespaces, settings.cost_interval_seconds) == (0, ("ai",), 5.0)


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_AUTOSCALER_METRICS_SOURCE", "graphite")
    with pytest.raises(ValidationError, match="autoscaler_metrics_source"):
        OperatorSettings()


def test_the_operator_reads_its_engine_cost_and_burst_variables_once(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = {
        "LLMSERVE_ENGINE_KEY_SECRET": "ops/master",
        "LLMSERVE_ENGINE_NETWORK_POLICY": "false",
        "LLMSERVE_ENGINE_INGRESS_FROM": '[{"ipBlock": {"cidr": "10.0.0.0/8"}}]',
        "LLMSERVE_GPU_USD_PER_HOUR": '{"NVIDIA-L4": 0.3}',
        "LLMSERVE_GPU_PRICES_ARE_EXAMPLES": "true",
        "LLMSERVE_BURST_CLOCK_OFFSET_FILE": "/tmp/offset",
        "LLMSERVE_BURST_RUNPOD_URL": "http://127.0.0.1:9",
        "LLMSERVE_BURST_PLUGIN_RUNPOD": "tests.support.burst_plugin:make",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    for name in variables:
        monkeypatch.delenv(name)  # read at construction: later changes to the environment do not matter
    assert str(settings.engine_key_ref()) == "ops/master"
    assert settings.engine_network_policy is False
    assert settings.engine_ingress_peers() == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    prices = settings.prices()
    assert (prices.price("NVIDIA-L4"), prices.are_examples) == (0.3, True)
    assert settings.burst_clock_offset_file == "/tmp/offset"
    assert settings.burst_providers == {
        "runpod": {"url": "http://127.0.0.1:9", "plugin": "tests.support.burst_plugin:make"}
    }


def test_burst_overrides_are_keyed_by_provider_and_setting() -> None:
    overrides = burst_overrides({
        "LLMSERVE_BURST_RUNPOD_PROXY_URL_TEMPLATE": "https://p/{pod_id}-{port}",
        "LLMSERVE_BURST_RUNPOD_CA_FILE": "/ca.pem",
        "LLMSERVE_BURST_VASTAI_URL": "http://v",
        "LLMSERVE_BURST_INTERVAL_SECONDS": "1",  # another setting, not an override
        "LLMSERVE_BURST_CLOCK_OFFSET_FILE": "/x",  # nor this one
    })  # fmt: skip
    assert overrides == {
        "runpod": {"proxy_url_template": "https://p/{pod_id}-{port}", "ca_file": "/ca.pem"},
        "vastai": {"url": "http://v"},
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LLMSERVE_ENGINE_INGRESS_FROM", '{"podSelector": {}}'),
        ("LLMSERVE_GPU_USD_PER_HOUR", '{"NVIDIA-L4": -1}'),
        ("LLMSERVE_ENGINE_NETWORK_POLICY", "sometimes"),
        ("LLMSERVE_ENGINE_KEY_SECRET", "ops/"),
    ],
)
def test_the_operator_refuses_to_start_naming_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["operator"])
    assert stopped.value.code == 2
    assert f"llmserve operator: invalid setting {variable}:" in capsys.readouterr().err


def test_every_gateway_flag_keeps_its_name_and_default() -> None:
    settings = load_settings([])
    by_flag = {
        flag_name(f): getattr(settings, n) for n, f in GatewaySettings.model_fields.items() if flag_name(f)
    }
    assert by_flag == GATEWAY_FLAG_DEFAULTS


def test_the_chart_s_gateway_flags_parse_into_the_settings() -> None:
    settings = load_settings(["--host=0.0.0.0", "--port=8080", "--metrics-host=0.0.0.0", "--metrics-port=9091",
                              "--hold-timeout=180", "--shutdown-delay=10", "--drain-timeout=600",
                              "--read-timeout=600", "--engine-key-secret=ops/llmserve-engine-key-master",
                              "--keys-namespace=ops", "--key-secret=a", "--key-secret=b", "--namespace=ai",
                              "--insecure-no-auth", "--queue-when-full", "--routing", "least-load"])  # fmt: skip
    assert (settings.host, settings.shutdown_delay, settings.insecure_no_auth) == ("0.0.0.0", 10.0, True)
    assert (settings.key_secret, settings.namespaces, settings.routing) == (
        ("a", "b"),
        ("ai",),
        Policy.LEAST_LOAD,
    )
    assert str(settings.engine_key_ref) == "ops/llmserve-engine-key-master"
    assert settings.burst_secrets_namespace == "ops"  # --burst-namespace defaults to --keys-namespace
    assert load_settings(["--queue-when-full", "--no-queue-when-full"]).queue_when_full is False


def test_gateway_flags_default_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "edge")
    monkeypatch.setenv("LLMSERVE_ENGINE_KEY_SECRET", "ops/master")
    monkeypatch.setenv("LLMSERVE_BURST_RUNPOD_CA_FILE", "/ca.pem")
    settings = load_settings([])
    assert (settings.api_keys_namespace, str(settings.engine_key_ref)) == ("edge", "ops/master")
    assert settings.burst_secrets_namespace == "edge"
    assert settings.burst_providers == {"runpod": {"ca_file": "/ca.pem"}}
    assert load_settings(["--keys-namespace", "k"]).api_keys_namespace == "k"
    overridden = load_settings(["--engine-key-secret", "none", "--burst-namespace", "-"])
    assert (overridden.engine_key_ref, overridden.burst_secrets_namespace) == (None, None)


def test_a_gateway_flag_is_not_taken_from_a_stray_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_PORT", "1")
    monkeypatch.setenv("LLMSERVE_HOST", "0.0.0.0")
    settings = load_settings([])
    assert (settings.port, settings.host) == (8080, "127.0.0.1")


@pytest.mark.parametrize(
    ("argv", "variables", "named"),
    [
        (["--port", "70000"], {}, "--port"),
        (["--max-attempts", "0"], {}, "--max-attempts"),
        (["--engine-key-secret", "/m"], {}, "--engine-key-secret / LLMSERVE_ENGINE_KEY_SECRET"),
        ([], {"LLMSERVE_KUBE_MAX_IN_FLIGHT": "0"}, "LLMSERVE_KUBE_MAX_IN_FLIGHT"),
    ],
)
def test_the_gateway_refuses_to_start_naming_a_bad_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    variables: dict[str, str],
    named: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(argv)
    assert stopped.value.code == 2
    assert f"llmserve gateway: invalid setting {named}:" in capsys.readouterr().err


def test_the_gateway_s_help_lists_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = build_parser().format_help()
    for option in GATEWAY_FLAG_DEFAULTS:
        assert option in text, option
    assert "(default: 9091)" in text


def test_the_operator_s_flags_are_the_settings_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["operator", "--help"])
    text = capsys.readouterr().out
    flags = {flag_name(f) for f in OperatorSettings.model_fields.values() if flag_name(f)}
    assert flags == {"--namespace", "--liveness-port", "--metrics-port", "--verbose", "--no-leader-election"}
    assert all(option in text for option in flags)


@pytest.mark.parametrize("settings_class", [OperatorSettings, GatewaySettings])
def test_the_configuration_page_holds_each_process_s_table(settings_class: type[OperatorSettings]) -> None:
    """The page cannot drift from the models: regenerate it with `python -m llmserve.settings`."""
    assert settings_class.table() in DOCS.read_text(), (
        f"docs/configuration.md lacks the current table of {settings_class.PROGRAM}: "
        "paste it from `python -m llmserve.settings`"
    )
