"""The fake provider's billing ledger: per-second charges on a manual clock, price changes, pauses."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmserve.sim.provider import cloud as c


def new_cloud(tmp_path: Path) -> c.Cloud:
    return c.Cloud.load(tmp_path / "state.json", manual_clock=True)


def add(cloud: c.Cloud, usd_per_hour: float = 3.6) -> dict[str, object]:
    record = {"name": "n", "usd_per_hour": usd_per_hour, "gpu_type": "g", "gpus": 1}
    return cloud.add("vastai", record, provision_seconds=10)


def test_bills_per_second_from_create_and_stops_at_termination(tmp_path: Path) -> None:
    cloud = new_cloud(tmp_path)
    instance = add(cloud)
    cloud.clock.advance(10)
    cloud.set_status(instance, c.RUNNING)
    cloud.clock.advance(90)
    cloud.set_status(instance, c.TERMINATED)
    cloud.clock.advance(1000)
    line = cloud.ledger()["instances"][instance["id"]]
    assert line["usd"] == pytest.approx(0.1) and line["billed_seconds"] == pytest.approx(100)


def test_price_rise_and_paused_storage_are_billed_from_the_moment_they_happen(tmp_path: Path) -> None:
    cloud = new_cloud(tmp_path)
    instance = add(cloud)
    cloud.clock.advance(1800)
    instance["usd_per_hour"] = 7.2
    cloud.set_rate(instance, 7.2)
    cloud.clock.advance(1800)
    cloud.set_status(instance, c.PAUSED, storage_usd_per_hour=0.01)
    cloud.clock.advance(3600)
    assert cloud.ledger()["instances"][instance["id"]]["usd"] == pytest.approx(1.8 + 3.6 + 0.01)


def test_a_terminated_instance_is_never_resurrected_by_a_late_transition(tmp_path: Path) -> None:
    cloud = new_cloud(tmp_path)
    instance = add(cloud)
    cloud.set_status(instance, c.TERMINATED)
    cloud.set_status(instance, c.EXITED, storage_usd_per_hour=1.0)
    cloud.clock.advance(3600)
    assert instance["status"] == c.TERMINATED and cloud.ledger()["total_usd"] == 0.0


def test_state_survives_a_reload(tmp_path: Path) -> None:
    cloud = new_cloud(tmp_path)
    instance = add(cloud)
    cloud.faults["terminate_failures"] = 2
    cloud.clock.advance(3600)
    cloud.save()
    again = new_cloud(tmp_path)
    assert again.ledger() == cloud.ledger() and again.faults["terminate_failures"] == 2
    assert again.instances[instance["id"]]["name"] == "n"


def test_the_wall_clock_cannot_be_advanced(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--clock manual"):
        c.Cloud.load(tmp_path / "s.json", manual_clock=False).clock.advance(1)
