"""Backend choice: slot-aware least load, prefix affinity with bounded loads, and the old power of two."""

from __future__ import annotations

import random
from collections import Counter

from llmserve.gateway.affinity import prefix_key
from llmserve.gateway.routing import (
    Candidate,
    Policy,
    affine,
    choose,
    least_load,
    load_score,
    power_of_two,
    ring_walk,
    route,
)

# Load snapshots as the gateway saw them in a 7-replica fleet with 8 batch slots each, 48 streaming
# users and a 1 s scrape: (own in-flight, scraped running, scraped waiting, KV use). The scrape is up to a
# second old, so replica r3 looks idle to it although this gateway has just filled it.
SNAPSHOT_STALE_SCRAPE = [
    (7, 7, 0, 0.05),
    (8, 8, 0, 0.06),
    (6, 6, 0, 0.04),
    (8, 1, 0, 0.01),  # r3: full now, nearly idle at the last scrape
    (7, 8, 1, 0.06),
    (5, 5, 0, 0.04),
    (7, 7, 0, 0.05),
]
# Every replica full but r5, which holds one queued request of the scrape's and is free again now.
SNAPSHOT_ONE_ROOM = [
    (8, 8, 0, 0.06),
    (8, 8, 0, 0.06),
    (8, 8, 1, 0.07),
    (8, 8, 0, 0.05),
    (8, 8, 0, 0.06),
    (7, 8, 1, 0.06),
    (8, 8, 0, 0.06),
]


def fleet(snapshot: list[tuple[int, float, float, float]], slots: int = 8) -> list[Candidate]:
    return [
        Candidate(f"r{i}", own, running, waiting, kv, capacity=slots, others_in_flight=0.0)
        for i, (own, running, waiting, kv) in enumerate(snapshot)
    ]


def test_a_full_replica_is_never_chosen_while_another_has_a_free_slot() -> None:
    rng = random.Random(5)
    for snapshot in (SNAPSHOT_STALE_SCRAPE, SNAPSHOT_ONE_ROOM):
        picks = {least_load(fleet(snapshot), rng).candidate.key for _ in range(500)}  # type: ignore[union-attr]
        assert all(fleet(snapshot)[int(key[1:])].has_room for key in picks)
    assert {least_load(fleet(SNAPSHOT_ONE_ROOM), rng).candidate.key for _ in range(50)} == {"r5"}  # type: ignore[union-attr]


def test_the_old_power_of_two_router_puts_requests_on_full_replicas_that_a_stale_scrape_shows_idle() -> None:
    rng = random.Random(11)
    choices = [power_of_two(fleet(SNAPSHOT_STALE_SCRAPE), rng) for _ in range(2000)]
    on_full = [c for c in choices if c is not None and c.placed_on_full]
    assert len(on_full) > 200
    assert Counter(c.candidate.key for c in on_full)["r3"] > 100


def test_random_snapshots_never_break_the_rule_for_least_load_or_prefix_routing() -> None:
    rng = random.Random(2026)
    for _ in range(3000):
        n = rng.randint(2, 9)
        candidates = [
            Candidate(
                f"r{i}",
                outstanding=rng.randint(0, 10),
                scraped_running=rng.randint(0, 10),
                scraped_waiting=rng.choice([0, 0, 0, 1, 3]),
                kv_usage_fraction=rng.random(),
                capacity=rng.choice([4, 8, 16]),
                others_in_flight=rng.choice([0.0, 0.0, 2.0]),
            )
            for i in range(n)
        ]
        for policy in (Policy.LEAST_LOAD, Policy.PREFIX):
            choice = route(policy, candidates, rng, affinity_key=rng.getrandbits(64))
            assert choice is not None and not choice.placed_on_full
            if any(c.has_room for c in candidates):
                assert choice.candidate.has_room


def test_least_load_takes_the_fewest_requests_per_slot_then_the_emptier_kv_cache() -> None:
    rng = random.Random(0)
    candidates = [
        Candidate("busy", 5, capacity=8),
        Candidate("light-but-kv-full", 2, kv_usage_fraction=0.9, capacity=8),
        Candidate("light", 2, kv_usage_fraction=0.2, capacity=8),
    ]
    assert choose(candidates, rng).key == "light"  # type: ignore[union-attr]
    # A bigger replica with more requests can still be the emptier one per slot.
    assert choose([Candidate("small", 3, capacity=4), Candidate("big", 6, capacity=32)], rng).key == "big"  # type: ignore[union-attr]


def test_exact_ties_are_spread_at_random() -> None:
    rng = random.Random(3)
    picks = Counter(
        choose([Candidate(f"r{i}", 1, capacity=8) for i in range(4)], rng).key for _ in range(400)
    )  # type: ignore[union-attr]
    assert set(picks) == {"r0", "r1", "r2", "r3"} and min(picks.values()) > 60


def test_other_gateways_requests_seen_by_the_last_scrape_count_as_load() -> None:
    # This gateway has 2 requests on each; the engine of r0 reported 8 (6 from another gateway replica).
    r0 = Candidate("r0", 2, scraped_running=8, capacity=8, others_in_flight=6)
    r1 = Candidate("r1", 2, scraped_running=2, capacity=8, others_in_flight=0)
    assert not r0.has_room and r1.has_room
    assert choose([r0, r1], random.Random(0)).key == "r1"  # type: ignore[union-attr]


def test_an_engine_that_reported_a_queue_is_full_at_what_it_was_running() -> None:
    # KV cache ran out at 5 running although 8 slots are configured: room again only below 5.
    assert not Candidate("a", 5, scraped_running=5, scraped_waiting=2, capacity=8).has_room
    assert Candidate("a", 4, scraped_running=5, scraped_waiting=2, capacity=8).has_room


def test_when_every_replica_is_full_the_least_over_full_one_takes_it_and_that_is_not_a_violation() -> None:
    choice = least_load([Candidate("a", 12, capacity=8), Candidate("b", 9, capacity=8)], random.Random(0))
    assert choice is not None and choice.candidate.key == "b" and not choice.placed_on_full


def test_recently_failed_backends_are_only_used_when_nothing_else_is_left() -> None:
    rng = random.Random(3)
    ejected = Candidate("down", outstanding=0, ejected=True)
    busy = Candidate("up", outstanding=50)
    assert {choose([ejected, busy], rng).key for _ in range(20)} == {"up"}  # type: ignore[union-attr]
    assert choose([ejected], rng) == ejected
    assert power_of_two([ejected, busy], rng).candidate.key == "up"  # type: ignore[union-attr]


def test_no_candidates_means_no_choice() -> None:
    for policy in Policy:
        assert route(policy, [], random.Random(0), affinity_key=1) is None


def test_the_old_load_score_does_not_count_own_requests_twice() -> None:
    assert load_score(Candidate("a", outstanding=4, scraped_running=4)) == 4
    assert load_score(Candidate("b", 0, scraped_running=8, scraped_waiting=3)) > load_score(Candidate("c", 0))


# -- prefix affinity -------------------------------------------------------------------------------


def idle_fleet(n: int, slots: int = 8) -> list[Candidate]:
    return [Candidate(f"http://10.0.0.{i}:8000", 0, capacity=slots) for i in range(n)]


def test_the_same_prefix_goes_to_the_same_replica_whatever_the_order_of_the_backends() -> None:
    rng = random.Random(1)
    candidates = idle_fleet(5)
    first = affine(candidates, 12345, rng)
    assert first is not None and first.affine
    for _ in range(20):
        shuffled = candidates[:]
        rng.shuffle(shuffled)
        assert affine(shuffled, 12345, rng).candidate.key == first.candidate.key  # type: ignore[union-attr]


def test_prefixes_spread_over_all_replicas() -> None:
    rng = random.Random(2)
    owners = Counter(affine(idle_fleet(5), rng.getrandbits(64), rng).candidate.key for _ in range(5000))  # type: ignore[union-attr]
    assert len(owners) == 5 and min(owners.values()) > 500


def test_removing_a_replica_only_moves_the_prefixes_it_owned() -> None:
    keys = tuple(sorted(c.key for c in idle_fleet(5)))
    rng = random.Random(4)
    prefixes = [rng.getrandbits(64) for _ in range(2000)]
    before = {p: next(ring_walk(keys, p)) for p in prefixes}
    gone = keys[2]
    after = {p: next(ring_walk(tuple(k for k in keys if k != gone), p)) for p in prefixes}
    moved = [p for p in prefixes if before[p] != after[p]]
    assert moved and all(before[p] == gone for p in moved)


def test_a_busy_affine_replica_passes_the_request_to_the_next_one_on_the_ring() -> None:
    rng = random.Random(0)
    keys = tuple(sorted(c.key for c in idle_fleet(4)))
    prefix = 987654321
    owner, second = list(ring_walk(keys, prefix))[:2]
    # Full: the owner has no free slot.
    full = [Candidate(k, 8 if k == owner else 2, capacity=8) for k in keys]
    choice = affine(full, prefix, rng)
    assert choice is not None and choice.candidate.key == second and choice.affine
    # Not full, but over its bounded share: 7 of 13 requests on one of four replicas (bound 1.25 x 14/4).
    loaded = [Candidate(k, 7 if k == owner else 2, capacity=32) for k in keys]
    assert affine(loaded, prefix, rng).candidate.key == second  # type: ignore[union-attr]
    # Within its share, it keeps the request.
    fine = [Candidate(k, 3 if k == owner else 2, capacity=32) for k in keys]
    assert affine(fine, prefix, rng).candidate.key == owner  # type: ignore[union-attr]


def test_without_a_prefix_or_with_every_replica_full_prefix_routing_is_least_load() -> None:
    rng = random.Random(0)
    candidates = [Candidate("a", 3, capacity=8), Candidate("b", 1, capacity=8)]
    choice = affine(candidates, None, rng)
    assert choice is not None and choice.candidate.key == "b" and not choice.affine
    full = [Candidate("a", 9, capacity=8), Candidate("b", 8, capacity=8)]
    choice = affine(full, 42, rng)
    assert choice is not None and choice.candidate.key == "b" and not choice.affine


def test_every_turn_of_a_conversation_has_the_key_of_its_first_turn() -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 20}
    turn1 = [system, {"role": "user", "content": "Plan a trip to Lisbon."}]
    turn2 = [*turn1, {"role": "assistant", "content": "Day 1: ..."}, {"role": "user", "content": "Cheaper?"}]
    other = [system, {"role": "user", "content": "Explain TCP slow start."}]
    path = "/v1/chat/completions"
    key1 = prefix_key(path, {"messages": turn1})
    assert key1 is not None and key1 == prefix_key(path, {"messages": turn2})
    assert prefix_key(path, {"messages": other}) != key1


def test_completions_share_a_key_by_their_first_characters_and_other_endpoints_have_none() -> None:
    path = "/v1/completions"
    shared = "x" * 2000
    assert prefix_key(path, {"prompt": shared + "a"}) == prefix_key(path, {"prompt": shared + "b"})
    assert prefix_key(path, {"prompt": "a" * 300}) != prefix_key(path, {"prompt": "b" * 300})
    assert prefix_key(path, {"prompt": list(range(100))}) is not None


def test_short_prompts_have_no_key_so_least_load_spreads_them() -> None:
    assert prefix_key("/v1/completions", {"prompt": "x"}) is None
    assert prefix_key("/v1/completions", {"prompt": [1, 2, 3]}) is None
    assert prefix_key("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}) is None
    # A conversation that began short gets its key once its history is long enough to be worth caching.
    path = "/v1/chat/completions"
    grown = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a" * 400}]
    turn2 = [*grown, {"role": "user", "content": "more"}]
    turn3 = [*turn2, {"role": "assistant", "content": "b" * 300}, {"role": "user", "content": "and?"}]
    key = prefix_key(path, {"messages": turn2})
    assert key is not None and key == prefix_key(path, {"messages": turn3})
    # Another conversation that also opened with "hi" is told apart by its first answer.
    other = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "c" * 400}, turn2[-1]]
    assert prefix_key(path, {"messages": other}) != key
    assert prefix_key("/v1/embeddings", {"input": "x"}) is None
    assert prefix_key("/v1/chat/completions", {"messages": "not a list"}) is None
