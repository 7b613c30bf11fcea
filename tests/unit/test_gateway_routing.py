"""Backend choice: least load by power of two choices, informed by scraped queue and KV use."""

from __future__ import annotations

import random
from collections import Counter

from llmserve.gateway.routing import Candidate, choose, load_score


def test_a_backend_with_queued_requests_scores_higher_than_an_idle_one() -> None:
    idle = Candidate("a", outstanding=0)
    queued = Candidate("b", outstanding=0, scraped_running=8, scraped_waiting=3)
    assert load_score(queued) > load_score(idle)


def test_own_in_flight_requests_are_not_counted_twice_when_the_engine_also_reports_them() -> None:
    # Four requests from this gateway, which the engine reports as four running: load is 4, not 8.
    assert load_score(Candidate("a", outstanding=4, scraped_running=4)) == 4


def test_a_fuller_kv_cache_breaks_a_tie_in_request_counts() -> None:
    assert load_score(Candidate("a", 2, kv_usage_fraction=0.9)) > load_score(
        Candidate("b", 2, kv_usage_fraction=0.1)
    )


def test_with_two_backends_the_less_loaded_one_is_always_chosen() -> None:
    rng = random.Random(1)
    busy, free = Candidate("busy", outstanding=5), Candidate("free", outstanding=1)
    picks = {choose([busy, free], rng).key for _ in range(50)}  # type: ignore[union-attr]
    assert picks == {"free"}


def test_the_most_loaded_of_many_backends_is_never_chosen_and_load_spreads() -> None:
    rng = random.Random(7)
    candidates = [Candidate(f"b{i}", outstanding=i) for i in range(6)]
    picks = Counter(choose(candidates, rng).key for _ in range(3000))  # type: ignore[union-attr]
    assert picks["b5"] == 0
    assert picks["b0"] > picks["b1"] > picks["b2"] > picks["b4"]


def test_recently_failed_backends_are_only_used_when_nothing_else_is_left() -> None:
    rng = random.Random(3)
    ejected = Candidate("down", outstanding=0, ejected=True)
    busy = Candidate("up", outstanding=50)
    assert {choose([ejected, busy], rng).key for _ in range(20)} == {"up"}  # type: ignore[union-attr]
    assert choose([ejected], rng) == ejected


def test_no_candidates_means_no_choice() -> None:
    assert choose([], random.Random(0)) is None
