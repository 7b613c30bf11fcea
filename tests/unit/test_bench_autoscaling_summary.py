"""bench/autoscaling_summary.py: issue #8's goals judged on the unrounded figures `--json` records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import autoscaling_summary as summary

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _policy(attainment: float, avoidable: float = 0.0, gpu_hours: float = 1.0, cap: bool = False) -> dict:
    return {
        "name": "x",
        "attainment": attainment,
        "avoidable_misses": avoidable,
        "ttft_misses": 1 - attainment,
        "itl_misses": 0.0,
        "gpu_hours": gpu_hours,
        "gpu_hours_per_1k_good": 1.0,
        "peak_replicas": 3,
        "at_gpu_cap": cap,
    }


def _cell(ours: dict, others: dict[str, dict], oracle_hours: float = 10.0, cold: float = 60) -> dict:
    return {
        "trace": "flash crowds 3x",
        "cold_start_seconds": cold,
        "suite_scale": 0.3,
        "oracle_gpu_hours": oracle_hours,
        "static_meets_goal": True,
        "policies": {"oracle": _policy(0.99, gpu_hours=oracle_hours), "llmserve": ours, **others},
    }


def test_a_gpu_hour_ratio_that_prints_as_1_30x_is_judged_on_its_unrounded_value() -> None:
    under = _cell(_policy(0.9, gpu_hours=12.985), {"HPA-style": _policy(0.5)})
    over = _cell(_policy(0.9, gpu_hours=13.004), {"HPA-style": _policy(0.5)})
    assert summary.goals(under).gpu_hours
    assert not summary.goals(over).gpu_hours
    assert "| 1.30x |" in summary.table([under])[2] and "| 1.30x |" in summary.table([over])[2]


def test_a_tie_keeps_the_attainment_lead_and_any_better_autoscaled_policy_takes_it() -> None:
    tie = _cell(_policy(0.5), {"HPA-style": _policy(0.5), "KEDA-style": _policy(0.4)})
    lost = _cell(_policy(0.5), {"HPA-style": _policy(0.4), "KubeAI-style": _policy(0.5001)})
    assert summary.goals(tie).attainment
    assert not summary.goals(lost).attainment
    assert "KubeAI-style 50.01%" in summary.table([lost])[2]


def test_avoidable_misses_must_be_below_one_percent_not_at_it() -> None:
    assert summary.goals(_cell(_policy(0.9, avoidable=0.0099), {})).avoidable
    assert not summary.goals(_cell(_policy(0.9, avoidable=0.01), {})).avoidable


def test_counts_add_up_over_cells_and_a_cell_recorded_twice_keeps_its_last_run(tmp_path: Path) -> None:
    good = _cell(_policy(0.9, gpu_hours=11.0), {"HPA-style": _policy(0.5)})
    bad = _cell(_policy(0.4, avoidable=0.2, gpu_hours=30.0), {"HPA-style": _policy(0.5)}, cold=180)
    rerun = dict(bad, policies=dict(bad["policies"], llmserve=_policy(0.6, gpu_hours=12.0)))
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in (good, bad, rerun)) + "\n")
    cells = summary.load([path])
    assert len(cells) == 2
    assert summary.counts(cells) == (
        "2 cells: highest attainment 2, avoidable misses < 1% 2, GPU-hours <= 1.3x the oracle's 2, all three 2"
    )


def test_the_benchmark_records_what_the_summary_reads(tmp_path: Path) -> None:
    """One short suite cell through the real command line, then the summary of what it wrote."""
    path = tmp_path / "run.jsonl"
    subprocess.run(
        [sys.executable, str(BENCH / "autoscaling.py"), "--suite", "--suite-scale", "0.05", "--only",
         "flash crowds 3x", "--cold-starts", "60", "--policies", "llmserve,hpa", "--json", str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (cell,) = summary.load([path])
    assert cell["trace"] == "flash crowds 3x" and cell["cold_start_seconds"] == 60
    assert cell["suite_scale"] == 0.05 and cell["static_meets_goal"] is None
    assert set(cell["policies"]) == {"oracle", "llmserve", "HPA-style"}
    assert 0 < cell["policies"]["llmserve"]["attainment"] <= 1
    assert cell["oracle_gpu_hours"] == cell["policies"]["oracle"]["gpu_hours"] > 0
    out = subprocess.run(
        [sys.executable, str(BENCH / "autoscaling_summary.py"), str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "| flash crowds 3x | 60 |" in out and "1 cells: highest attainment" in out
