"""The scraper's page memo: an unchanged page is not parsed again; a changed one is; idle replicas are forgotten."""

from __future__ import annotations

from llmserve.autoscale.collect import PageMemo, parse_engine_metrics
from llmserve.autoscale.policy import ReplicaMetrics

PAGE = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama"} {waiting}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 0.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
"""


def page(waiting: float, cpu: float) -> str:
    return PAGE.replace("{waiting}", str(waiting)).replace("{cpu}", str(cpu))


class CountingParser:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> ReplicaMetrics:
        self.calls += 1
        return parse_engine_metrics(text)


KEY = ("ai", "llama-0", "10.0.0.5")


def test_a_page_whose_vllm_samples_did_not_change_is_not_parsed_again() -> None:
    memo, parse = PageMemo(clock=lambda: 0.0), CountingParser()
    first = memo.parsed(KEY, page(3.0, cpu=1.0), parse)
    again = memo.parsed(KEY, page(3.0, cpu=1.7), parse)  # only the process' own series moved
    assert parse.calls == 1
    assert again == first and again.requests_waiting == 3.0


def test_a_changed_sample_is_parsed_and_replaces_the_remembered_one() -> None:
    memo, parse = PageMemo(clock=lambda: 0.0), CountingParser()
    memo.parsed(KEY, page(3.0, cpu=1.0), parse)
    changed = memo.parsed(KEY, page(9.0, cpu=1.0), parse)
    back = memo.parsed(KEY, page(3.0, cpu=1.0), parse)
    assert (changed.requests_waiting, back.requests_waiting) == (9.0, 3.0)
    assert parse.calls == 3


def test_replicas_are_remembered_apart() -> None:
    memo, parse = PageMemo(clock=lambda: 0.0), CountingParser()
    memo.parsed(KEY, page(3.0, cpu=1.0), parse)
    other = memo.parsed(("ai", "llama-1", "10.0.0.6"), page(3.0, cpu=1.0), parse)
    assert parse.calls == 2 and other.requests_waiting == 3.0


def test_replicas_not_scraped_for_a_while_are_forgotten() -> None:
    now = [0.0]
    memo, parse = PageMemo(keep_seconds=300.0, clock=lambda: now[0]), CountingParser()
    memo.parsed(KEY, page(3.0, cpu=1.0), parse)
    for second in range(5, 400, 5):  # another replica keeps being scraped; KEY's pod is gone
        now[0] = float(second)
        memo.parsed(("ai", "llama-1", "10.0.0.6"), page(1.0, cpu=1.0), parse)
    assert len(memo) == 1
