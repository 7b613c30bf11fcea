"""Rented burst instances are metered at the price the burst controller recorded for them."""

from __future__ import annotations

from llmserve.controller.cost import rented_holders
from llmserve.cost.meter import Holder


def test_a_model_that_rents_nothing_has_no_rented_holder() -> None:
    assert rented_holders({"status": {}}) == []
    assert rented_holders({"status": {"burst": {"burnRateUsdPerHour": 0, "rentedGpus": 0}}}) == []


def test_rented_gpus_are_billed_at_the_recorded_burn_rate() -> None:
    body = {"status": {"burst": {"burnRateUsdPerHour": 7.5, "rentedGpus": 3}}}
    (holder,) = rented_holders(body)
    assert holder == Holder("burst", "rented", 3, 2.5)
    assert holder.gpus * holder.usd_per_gpu_hour == 7.5


def test_an_unknown_gpu_count_still_bills_every_dollar() -> None:
    (holder,) = rented_holders({"status": {"burst": {"burnRateUsdPerHour": 4.0}}})
    assert holder.gpus * holder.usd_per_gpu_hour == 4.0
