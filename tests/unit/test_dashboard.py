"""The Grafana dashboard queries only metrics and labels llmserve exports, and the chart ships it."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

import llmserve.controller.burst_metrics as burst_metrics
import llmserve.controller.metrics as controller_metrics
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.sim.metrics import EngineMetrics
from tests.support.helm import build_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"
DASHBOARD_PATH = CHART / "dashboards" / "llmserve.json"

Panel = dict[str, Any]

# A series label a template variable filters on, and that variable.
VARIABLE_OF_LABEL = {
    "namespace": "$namespace",
    "llmserve": "$llmserve",
    "model_name": "$model",
    "model": "$model",
}

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r'(?<![\w:$])([A-Za-z_:][\w:]*)\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}')
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')
_PROJECT_METRIC = re.compile(r"(?<![\w:$])((?:vllm:|llmserve_)[\w:]*)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")


# -- what llmserve exports --------------------------------------------------------------------------


def _series_of_family(family: Metric, label_names: Iterable[str]) -> dict[str, frozenset[str]]:
    """The series names Prometheus stores for one family, each with its label names."""
    labels = frozenset(label_names)
    if family.type == "counter":
        return {f"{family.name}_total": labels, f"{family.name}_created": labels}
    if family.type == "histogram":
        return {
            f"{family.name}_bucket": labels | {"le"},
            f"{family.name}_sum": labels,
            f"{family.name}_count": labels,
            f"{family.name}_created": labels,
        }
    if family.type == "summary":
        return {
            family.name: labels | {"quantile"},
            f"{family.name}_sum": labels,
            f"{family.name}_count": labels,
        }
    if family.type == "info":
        return {f"{family.name}_info": labels}
    return {family.name: labels}


def _declared_label_names(metrics: Iterable[object]) -> dict[str, tuple[str, ...]]:
    """Label names by family name.

    prometheus_client has no public accessor for the label names of a metric that has no labelled child
    yet, which is the case for every per-LLMServe and per-model metric until traffic arrives.
    """
    return {
        family.name: tuple(metric._labelnames)
        for metric in metrics
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    }


def _series(families: Iterable[Metric], declared: Mapping[str, tuple[str, ...]]) -> dict[str, frozenset[str]]:
    series: dict[str, frozenset[str]] = {}
    for family in families:
        sampled = {label for sample in family.samples for label in sample.labels if label != "le"}
        series.update(_series_of_family(family, sampled | set(declared.get(family.name, ()))))
    return series


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the operator, the gateway and an engine (the simulator) export, with labels."""
    # The operator serves prometheus_client's default registry (start_http_server).
    declared = [*vars(controller_metrics).values(), *vars(burst_metrics).values()]  # same registry
    operator = _series(REGISTRY.collect(), _declared_label_names(declared))
    gateway_metrics = GatewayMetrics()
    gateway = _series(
        gateway_metrics.registry.collect(), _declared_label_names(vars(gateway_metrics).values())
    )
    # Every optional engine series on: the legacy KV-cache gauge and the cache config info.
    engine_metrics = EngineMetrics("model", max_model_len=4096, legacy_gpu_cache_metric=True)
    engine_metrics.set_cache_config(16, 1000, 0.9, "auto")
    engine = _series(engine_metrics.registry.collect(), {})
    return operator | gateway | engine


def test_the_exported_series_include_the_three_components() -> None:
    series = exported_series()
    assert series["llmserve_desired_replicas"] == {"namespace", "llmserve"}
    assert series["llmserve_gateway_tokens_total"] == {"key", "model", "kind"}
    assert series["vllm:time_to_first_token_seconds_bucket"] == {"model_name", "engine", "le"}
    assert series["llmserve_burst_instances"] == {"pool", "provider", "phase"}


# -- what the dashboard queries ---------------------------------------------------------------------


@cache
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    return loaded


def panels(items: list[Panel] | None = None) -> Iterator[Panel]:
    """Every panel that shows data (rows are only headings), nested ones in collapsed rows included."""
    for panel in dashboard()["panels"] if items is None else items:
        if panel.get("type") == "row":
            yield from panels(panel.get("panels", []))
        else:
            yield panel


def panel_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every panel target."""
    for panel in panels():
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target.get("expr", "")


def variable_queries() -> Iterator[tuple[str, str]]:
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable ${variable['name']}", query["query"] if isinstance(query, dict) else query


def all_queries() -> Iterator[tuple[str, str]]:
    yield from panel_queries()
    for where, query in variable_queries():
        match = _LABEL_VALUES.match(query)
        assert match, f"{where}: expected label_values(<selector>, <label>), got {query!r}"
        yield where, match.group(1)


def selectors(expr: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(metric, {label: quoted value}) for every `metric{...}` selector in a PromQL expression."""
    for match in _SELECTOR.finditer(expr):
        yield match.group(1), {m.group(1): m.group(3) for m in _MATCHER.finditer(match.group(2))}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: llmserve's and vLLM's prefixes, and anything with a selector."""
    unquoted = _QUOTED.sub('""', expr)
    return set(_PROJECT_METRIC.findall(unquoted)) | {name for name, _ in selectors(unquoted)}


def grouping_labels(expr: str) -> set[str]:
    unquoted = _QUOTED.sub('""', expr)
    return {
        label.strip() for group in _GROUPING.findall(unquoted) for label in group.split(",") if label.strip()
    }


# -- the tests --------------------------------------------------------------------------------------


def test_every_panel_has_a_title_a_description_and_a_query() -> None:
    shown = list(panels())
    assert len(shown) >= 20
    for panel in shown:
        assert panel.get("title"), f"panel {panel.get('id')} has no title"
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
        exprs = [target.get("expr") for target in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has a target without a PromQL expr"


def test_panel_titles_are_unique() -> None:
    titles = [panel["title"] for panel in panels()]
    assert sorted({title for title in titles if titles.count(title) > 1}) == []


def test_every_panel_queries_the_selected_prometheus_datasource() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_metric_the_dashboard_queries_is_exported_by_llmserve() -> None:
    exported = exported_series()
    unknown = {
        (where, name) for where, expr in all_queries() for name in metric_names(expr) if name not in exported
    }
    assert not unknown, f"metrics nothing in llmserve exports: {sorted(unknown)}"


def test_every_label_the_dashboard_selects_on_exists_on_its_metric() -> None:
    exported = exported_series()
    wrong = {
        (where, metric, label)
        for where, expr in all_queries()
        for metric, matchers in selectors(expr)
        for label in matchers
        if label not in exported.get(metric, frozenset())
    }
    assert not wrong, f"selectors on labels their metric does not have: {sorted(wrong)}"


def test_every_label_the_dashboard_groups_by_exists_on_a_metric_of_its_query() -> None:
    exported = exported_series()
    wrong = set()
    for where, expr in panel_queries():
        available = set().union(*(exported.get(name, frozenset()) for name in metric_names(expr)))
        wrong |= {(where, label) for label in grouping_labels(expr) - available}
    assert not wrong, f"grouping by labels no metric of the query has: {sorted(wrong)}"


def test_template_variables_read_their_values_from_exported_labels() -> None:
    exported = exported_series()
    for where, query in variable_queries():
        match = _LABEL_VALUES.match(query)
        assert match, where
        metric = next(iter(metric_names(match.group(1))))
        assert match.group(2) in exported[metric], f"{where}: {metric} has no label {match.group(2)}"


def test_every_panel_follows_the_namespace_llmserve_and_model_variables() -> None:
    exported = exported_series()
    unfiltered = set()
    for where, expr in panel_queries():
        for metric, matchers in selectors(expr):
            for label, variable in VARIABLE_OF_LABEL.items():
                if label in exported[metric] and matchers.get(label) != f'"{variable}"':
                    unfiltered.add((where, metric, label))
    assert not unfiltered, f"selectors that ignore a dashboard variable: {sorted(unfiltered)}"


def test_engine_panels_filter_by_served_model_not_by_pod_labels() -> None:
    for where, expr in panel_queries():
        for metric, matchers in selectors(expr):
            if metric.startswith("vllm:"):
                assert set(matchers) == {"model_name"}, f"{where}: {metric}{matchers}"


# -- the Helm chart ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    return build_helm()


def render_chart(helm: str, *settings: str) -> list[dict[str, Any]]:
    args = [helm, "template", "demo", str(CHART), "--namespace", "llm"]
    for setting in settings:
        args += ["--set", setting]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPO).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def dashboard_configmaps(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == "ConfigMap" and "llmserve.json" in doc.get("data", {})]


def test_the_chart_ships_the_dashboard_for_the_grafana_sidecar(helm: str) -> None:
    (configmap,) = dashboard_configmaps(render_chart(helm))
    assert configmap["metadata"]["namespace"] == "llm"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["llmserve.json"]) == dashboard()


def test_the_dashboard_label_and_namespace_can_be_changed(helm: str) -> None:
    documents = render_chart(
        helm,
        "dashboards.label=team_dashboard",
        "dashboards.labelValue=yes",
        "dashboards.namespace=monitoring",
        "dashboards.annotations.grafana_folder=llmserve",
    )
    (configmap,) = dashboard_configmaps(documents)
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["team_dashboard"] == "yes"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "llmserve"}


def test_the_dashboard_can_be_left_out(helm: str) -> None:
    assert dashboard_configmaps(render_chart(helm, "dashboards.enabled=false")) == []
