"""`llmserve plan`: both questions answered as a table, as JSON and as a picture; bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmserve.cli import main as llmserve_main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "bench" / "traces" / "azure-conv-sample.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = llmserve_main(["plan", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_capacity_table_names_replicas_and_the_binding_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "capacity", "--users", "100", "--max-num-seqs", "32", "--max-model-len", "8192",
                       "--slo-itl-seconds", "0.5")  # fmt: skip
    assert code == 0
    assert "users per replica     32 (binding limit: batch-slots" in out
    assert "replicas needed       4 (4 GPUs)" in out


def test_capacity_json_carries_the_memory_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "capacity", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpus-per-replica", "4",
                       "--users", "500", "--max-model-len", "8192", "--slo-itl-seconds", "0.03", "--json")  # fmt: skip
    assert code == 0
    answer = json.loads(out)
    assert answer["bindingLimit"] == "compute"
    assert answer["gpus"] == 4 * answer["replicas"]
    assert answer["memory"]["kvBytesPerUser"] == 1200 * 320 * 1024
    assert answer["atCapacity"]["itlSeconds"] <= 0.03


def test_rent_vs_buy_from_an_azure_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rent-vs-buy", "--trace", str(SAMPLE), "--max-num-seqs", "8", "--max-model-len", "8192",
                       "--local-usd-per-gpu-hour", "1.2", "--rent-usd-per-gpu-hour", "2.4", "--json")  # fmt: skip
    assert code == 0
    answer = json.loads(out)
    assert answer["breakEvenUtilization"] == pytest.approx(0.5)
    names = [option["name"] for option in answer["options"]]
    assert names == ["buy for the peak", "buy the baseline, rent the spikes", "rent everything"]
    assert answer["cheapest"] in names
    assert answer["load"]["meanPromptTokens"] > 0


def test_rent_vs_buy_daily_curve_table_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    picture = tmp_path / "rent-vs-buy.png"
    code, out, err = run(capsys, "rent-vs-buy", "--peak-rps", "30", "--trough-rps", "3", "--max-model-len", "8192",
                         "--gpu-purchase-usd", "30000", "--rent-usd-per-gpu-hour", "2.5", "--plot", str(picture))  # fmt: skip
    assert code == 0
    assert "<- cheapest" in out and "break-even" in out and "36 months" in out
    assert picture.read_bytes().startswith(PNG_MAGIC) and f"wrote {picture}" in err


def test_capacity_plot_is_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    picture = tmp_path / "capacity.png"
    code, _, _ = run(capsys, "capacity", "--users", "10", "--max-model-len", "8192", "--plot", str(picture))
    assert code == 0 and picture.read_bytes().startswith(PNG_MAGIC)


def test_fit_exits_nonzero_when_the_batch_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fit", "--gpu", "NVIDIA-L4", "--max-model-len", "8192", "--max-num-seqs", "8")
    assert code == 3 and "at most 3 full sequences" in out
    code, out, _ = run(capsys, "fit", "--gpu", "NVIDIA-L4", "--max-model-len", "8192", "--max-num-seqs", "3")
    assert code == 0 and "3 full sequences fit" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["capacity", "--users", "5", "--model", "acme/x"], "--model 'acme/x' is not in the built-in table"),
        (["capacity", "--users", "0"], "--users must be at least 1"),
        (["rent-vs-buy", "--rent-usd-per-gpu-hour", "2"], "give a load: --trace FILE"),
        (["rent-vs-buy", "--peak-rps", "5", "--rent-usd-per-gpu-hour", "2"], "--local-usd-per-gpu-hour"),
        (["rent-vs-buy", "--trace", "/nonexistent.csv", "--rent-usd-per-gpu-hour", "2", "--local-usd-per-gpu-hour", "1"],
         "--trace /nonexistent.csv"),
    ],
)  # fmt: skip
def test_bad_input_is_named_without_a_traceback(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_plan_runs_as_the_installed_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmserve.cli", "plan", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "rent-vs-buy" in result.stdout
