"""Records the /metrics page a vLLM release serves, from its wheel's source, for the name-pinning tests.

vLLM's Prometheus families are declared in `vllm/v1/metrics/loggers.py` (`PrometheusStatLogger`): each
`self._gauge_cls / _counter_cls / _histogram_cls(name=..., documentation=..., labelnames=...)`. This
script reads that file out of a downloaded wheel (no vLLM import, no GPU), keeps the families a default
`vllm serve` registers (those not under an `if` on an optional feature), declares the same families with
prometheus_client, sets every series to a known value and prints the text exposition, which is what the
engine's /metrics answers (vLLM serves prometheus_client's exposition too).

    pip download vllm==0.33.0 --no-deps -d /tmp/vllm-wheel
    python hack/vllm_metrics_payload.py /tmp/vllm-wheel/vllm-0.33.0-*.whl > tests/data/vllm-0.33.0-metrics.txt

The values are fixed (see `VALUES`) so tests can assert what the parsers read from the page.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LOGGERS = "vllm/v1/metrics/loggers.py"
BASE_LABELS = ("model_name", "engine")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# Label values vLLM pre-creates for the extra labels of the default families (loggers.py).
EXTRA_LABEL_VALUES = {
    "finished_reason": ("stop", "length", "abort", "error", "repetition"),
    "reason": ("capacity", "deferred"),
    "sleep_state": ("awake", "weights_offloaded", "discard_all"),
    "source": ("local_compute",),
}
# Gauges and counters the tests read, by family; every other series stays 0 (histograms: see below).
VALUES = {
    "vllm:num_requests_running": 5.0,
    "vllm:num_requests_waiting": 3.0,
    "vllm:kv_cache_usage_perc": 0.42,
    "vllm:gpu_cache_usage_perc": 0.42,
    "vllm:prompt_tokens": 1200.0,
    "vllm:generation_tokens": 3400.0,
    "vllm:request_success": 7.0,  # per finished_reason series
    "vllm:num_preemptions": 2.0,
    "vllm:prefix_cache_queries": 800.0,
    "vllm:prefix_cache_hits": 200.0,
}
HISTOGRAM_OBSERVATIONS = (0.02, 0.04, 0.3)  # seconds or tokens: observed once each in every histogram
_KINDS = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}
# Conditions under which loggers.py registers a family that a default `vllm serve` does not have.
_OPTIONAL = re.compile(
    r"show_hidden_metrics|kv_transfer|kv_cache_metrics|VLLM_COMPUTE_NANS|watermark|lora|speculative"
)


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # gauge | counter | histogram
    documentation: str
    labelnames: tuple[str, ...]
    condition: str  # the enclosing `if` tests, "" when always registered
    buckets: tuple[float, ...] | None = None

    @property
    def default(self) -> bool:
        return not _OPTIONAL.search(self.condition)


def _labelnames(node: ast.expr | None) -> tuple[str, ...]:
    """`labelnames` (the base pair), a literal list, or `labelnames + [...]`."""
    if node is None:
        return ()
    if isinstance(node, ast.Name) and node.id == "labelnames":
        return BASE_LABELS
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _labelnames(node.left) + _labelnames(node.right)
    try:
        return tuple(ast.literal_eval(node))
    except ValueError:
        return ("?",)  # computed names (LoRA's info gauge): only on optional families


def families(source: str) -> list[Family]:
    """Every family loggers.py declares with a literal `vllm:` name, in source order."""
    found: list[Family] = []

    def visit(node: ast.AST, conditions: tuple[str, ...]) -> None:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            for child in node.body:
                visit(child, (*conditions, test))
            for child in node.orelse:
                visit(child, (*conditions, f"not ({test})"))
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _KINDS:
            kwargs = {k.arg: k.value for k in node.keywords if k.arg}
            name = kwargs.get("name")
            if isinstance(name, ast.Constant) and str(name.value).startswith("vllm:"):
                buckets = kwargs.get("buckets")
                try:
                    literal = tuple(float(b) for b in ast.literal_eval(buckets)) if buckets else None
                except ValueError:
                    literal = None  # a variable (vLLM >= 0.12 keeps buckets in buckets.py)
                labels = kwargs.get("labelnames")
                found.append(
                    Family(
                        name=str(name.value),
                        kind=_KINDS[node.func.attr],
                        documentation=str(ast.literal_eval(kwargs["documentation"])),
                        labelnames=_labelnames(labels),
                        condition=" and ".join(conditions),
                        buckets=literal,
                    )
                )
        for child in ast.iter_child_nodes(node):
            visit(child, conditions)

    visit(ast.parse(source), ())
    if '"vllm:cache_config_info"' in source:  # declared through a variable in log_metrics_info
        found.append(
            Family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig", (), "")
        )
    return found


def read_loggers(wheel: str) -> tuple[str, str]:
    """(version, loggers.py source) from a vLLM wheel."""
    with zipfile.ZipFile(wheel) as archive:
        version_text = archive.read("vllm/_version.py").decode()
        match = re.search(r"__version__ = version = '([^']+)'", version_text)
        return (match.group(1) if match else "?"), archive.read(LOGGERS).decode()


def payload(found: list[Family], cache_config: dict[str, str]) -> bytes:
    """The text exposition of the default families, every series set to its `VALUES` entry."""
    registry = CollectorRegistry(auto_describe=True)
    for family in found:
        if not family.default:
            continue
        if family.name == "vllm:cache_config_info":
            info = Gauge(family.name, family.documentation, list(cache_config), registry=registry)
            info.labels(**cache_config).set(1)
            continue
        extra = [n for n in family.labelnames if n not in BASE_LABELS]
        combos: list[dict[str, str]] = [{"model_name": MODEL, "engine": "0"}]
        if family.labelnames and "engine" not in family.labelnames:  # e.g. admission_rejections
            combos = [{"model_name": MODEL}]
        for label in extra:
            combos = [c | {label: v} for c in combos for v in EXTRA_LABEL_VALUES.get(label, ("none",))]
        names = list(family.labelnames)
        value = VALUES.get(family.name, 0.0)
        if family.kind == "histogram":
            kwargs = {"buckets": family.buckets} if family.buckets else {}
            histogram = Histogram(family.name, family.documentation, names, registry=registry, **kwargs)
            for combo in combos:
                for observed in HISTOGRAM_OBSERVATIONS:
                    histogram.labels(**combo).observe(observed)
        elif family.kind == "counter":
            counter = Counter(family.name, family.documentation, names, registry=registry)
            for combo in combos:
                counter.labels(**combo).inc(value)
        else:
            gauge = Gauge(family.name, family.documentation, names, registry=registry)
            for combo in combos:
                gauge.labels(**combo).set(value)
    return generate_latest(registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="a vllm-X.Y.Z-*.whl (pip download vllm==X.Y.Z --no-deps)")
    parser.add_argument("--list", action="store_true", help="list every family and its condition instead")
    args = parser.parse_args(argv)
    version, source = read_loggers(args.wheel)
    found = families(source)
    if args.list:
        for family in found:
            flag = "default " if family.default else "optional"
            print(
                f"{flag} {family.kind:9} {family.name:50} {','.join(family.labelnames):30} {family.condition}"
            )
        return 0
    cache_config = {"block_size": "16", "cache_dtype": "auto", "gpu_memory_utilization": "0.9",
                    "num_gpu_blocks": "1000", "engine": "0"}  # fmt: skip
    sys.stdout.write(f"# vLLM {version}: families of {LOGGERS} a default `vllm serve` registers;\n")
    sys.stdout.write(
        "# recorded by hack/vllm_metrics_payload.py from the release wheel (values are fixed).\n"
    )
    sys.stdout.write(payload(found, cache_config).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
