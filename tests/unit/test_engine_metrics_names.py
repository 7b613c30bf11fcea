"""The vLLM metric names llmserve relies on, pinned against the /metrics pages of real vLLM releases.

tests/data/vllm-<version>-metrics.txt are the default pages of vLLM 0.33.0 (the default image), 0.11.0
(the previous default) and 0.10.1.1 (before the per-token latency rename), recorded from each release
wheel's `vllm/v1/metrics/loggers.py` by hack/vllm_metrics_payload.py with fixed values.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmserve import engine_metrics_names as names
from llmserve.api.llmserve import DEFAULT_VLLM_IMAGE
from llmserve.autoscale.collect import parse_engine_metrics as autoscaler_reads
from llmserve.cost.counters import parse_generation_tokens
from llmserve.engine_metrics import parse_engine_load as gateway_reads  # what gateway/scrape.py calls
from llmserve.sim.metrics import EngineMetrics

DATA = Path(__file__).resolve().parents[1] / "data"
CURRENT, PREVIOUS_DEFAULT, BEFORE_ITL = "0.33.0", "0.11.0", "0.10.1.1"
# What the recorded pages hold (hack/vllm_metrics_payload.py VALUES): one engine, five finish reasons
# (0.33.0) or three, each histogram observed three times (0.02, 0.04, 0.3).
WAITING, RUNNING, KV_FRACTION, PROMPT, GENERATED = 3.0, 5.0, 0.42, 1200.0, 3400.0
# Every family llmserve reads from an engine today (autoscaler, gateway, cost meter).
READ_BY_LLMSERVE = (
    names.WAITING, names.RUNNING, names.KV_CACHE, names.FINISHED, names.PROMPT_TOKENS,
    names.GENERATION_TOKENS, names.TTFT, names.ITL, names.QUEUE_TIME,
)  # fmt: skip


@cache
def page(version: str) -> str:
    return (DATA / f"vllm-{version}-metrics.txt").read_text()


def families(text: str) -> dict[str, tuple[str, str, frozenset[str]]]:
    """name -> (type, help, label names of its samples, le/quantile left out)."""
    found = {}
    for family in text_string_to_metric_families(text):
        labels = frozenset(k for s in family.samples for k in s.labels if k not in ("le", "quantile"))
        found[family.name] = (family.type, family.documentation, labels)
    return found


def test_the_default_image_is_the_release_the_names_were_checked_against() -> None:
    assert DEFAULT_VLLM_IMAGE == f"vllm/vllm-openai:v{names.VLLM_VERSION}"
    assert names.VLLM_VERSION == CURRENT


@pytest.mark.parametrize("name", READ_BY_LLMSERVE)
def test_every_family_llmserve_reads_is_on_the_current_release_page(name: str) -> None:
    assert name in families(page(CURRENT))


@pytest.mark.parametrize("rename", names.RENAMES, ids=lambda r: r.old)
def test_the_renamed_away_names_are_gone_from_the_current_release_and_were_on_older_ones(
    rename: names.Rename,
) -> None:
    assert rename.old not in families(page(CURRENT))
    assert rename.new in families(page(CURRENT))
    assert rename.old in families(page(BEFORE_ITL))  # the fallback's reason to exist


def test_the_autoscaler_reads_every_signal_from_the_current_release_page() -> None:
    metrics = autoscaler_reads(page(CURRENT))
    assert (metrics.requests_waiting, metrics.requests_running) == (WAITING, RUNNING)
    assert metrics.kv_cache_fraction == pytest.approx(KV_FRACTION)
    counters = metrics.counters
    assert counters is not None
    assert counters.requests_finished == 7.0 * len(names.FINISHED_REASONS)
    assert (counters.prompt_tokens, counters.generation_tokens) == (PROMPT, GENERATED)
    for histogram in (counters.time_to_first_token, counters.inter_token_latency, counters.queue_time):
        assert histogram is not None and histogram.count == 3
        assert histogram.sum_seconds == pytest.approx(0.36)


def test_the_gateway_and_the_cost_meter_read_the_current_release_page() -> None:
    load = gateway_reads(page(CURRENT))
    assert (load.requests_running, load.requests_waiting, load.kv_cache_fraction) == (
        RUNNING,
        WAITING,
        pytest.approx(KV_FRACTION),
    )
    assert parse_generation_tokens(page(CURRENT)) == GENERATED


def test_before_the_rename_the_per_token_latency_is_read_from_its_old_name() -> None:
    assert names.ITL not in families(page(BEFORE_ITL))
    counters = autoscaler_reads(page(BEFORE_ITL)).counters
    assert counters is not None and counters.inter_token_latency is not None
    assert counters.inter_token_latency.count == 3


def test_the_old_kv_cache_name_is_read_only_when_the_new_one_is_absent() -> None:
    # 0.10.1.1 exports both names: the newer one wins even when the older one says something else.
    old_line = re.compile(rf"^({re.escape(names.KV_CACHE_LEGACY)}{{[^}}]*}}) 0\.42$", re.M)
    disagreeing, changed = old_line.subn(r"\1 0.9", page(BEFORE_ITL))
    assert changed == 1
    assert autoscaler_reads(disagreeing).kv_cache_fraction == pytest.approx(KV_FRACTION)
    gateway_load = gateway_reads(disagreeing)
    assert gateway_load.kv_cache_fraction == pytest.approx(KV_FRACTION)
    # Before 0.9.2 only the older name existed.
    only_old = "\n".join(line for line in disagreeing.splitlines() if names.KV_CACHE not in line) + "\n"
    assert autoscaler_reads(only_old).kv_cache_fraction == pytest.approx(0.9)
    gateway_load = gateway_reads(only_old)
    assert gateway_load.kv_cache_fraction == pytest.approx(0.9)


@pytest.mark.parametrize("version", [CURRENT, PREVIOUS_DEFAULT, BEFORE_ITL])
def test_the_simulator_exports_only_families_the_release_exports_with_its_type_help_and_labels(
    version: str,
) -> None:
    simulator = EngineMetrics("model", max_model_len=4096, vllm_version=version)
    simulator.set_cache_config(16, 1000, 0.9, "auto")
    ours, theirs = families(simulator.render().decode()), families(page(version))
    assert set(ours) <= set(theirs), f"not exported by vLLM {version}: {sorted(set(ours) - set(theirs))}"
    for name, (kind, help_text, labels) in ours.items():
        their_kind, their_help, their_labels = theirs[name]
        assert (kind, labels) == (their_kind, their_labels), name
        assert help_text == their_help, name


@pytest.mark.parametrize("version", [CURRENT, PREVIOUS_DEFAULT, BEFORE_ITL])
def test_the_simulator_exports_every_family_llmserve_reads_that_the_release_has(version: str) -> None:
    exported = families(EngineMetrics("model", max_model_len=4096, vllm_version=version).render().decode())
    for name in READ_BY_LLMSERVE:
        assert (name in exported) == (name in families(page(version))), name


def test_the_simulator_page_of_an_engine_before_the_kv_rename_has_only_the_old_name() -> None:
    simulator = EngineMetrics("model", max_model_len=4096, vllm_version="0.9.0")
    simulator.set_scheduler_state(num_running=2, num_waiting=1, kv_usage_fraction=0.25)
    text = simulator.render().decode()
    assert names.KV_CACHE not in families(text) and names.ITL not in families(text)
    assert autoscaler_reads(text).kv_cache_fraction == pytest.approx(0.25)


def test_a_release_number_that_is_not_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'latest'"):
        names.version_tuple("latest")
    assert names.version_tuple("v0.10.1.1") == (0, 10, 1, 1)
