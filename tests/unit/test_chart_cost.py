"""The chart hands the platform's GPU prices to the operator, labelled as examples until they are set."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmserve.cost.prices import EXAMPLE_USD_PER_GPU_HOUR, price_book
from tests.support.helm import build_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"


@pytest.fixture(scope="module")
def helm() -> str:
    return build_helm()


def operator_env(helm: str, *settings: str) -> dict[str, str]:
    args = [helm, "template", "demo", str(CHART), "--namespace", "llm"]
    for setting in settings:
        args += ["--set", setting]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True, cwd=REPO).stdout
    documents: list[dict[str, Any]] = [d for d in yaml.safe_load_all(rendered) if d]
    (operator,) = [
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
    ]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_default_chart_prices_are_the_labelled_examples(helm: str) -> None:
    book = price_book(operator_env(helm))
    assert book.are_examples
    assert dict(book.usd_per_gpu_hour) == EXAMPLE_USD_PER_GPU_HOUR


def test_platform_prices_replace_the_examples(helm: str) -> None:
    env = operator_env(helm, "cost.pricesAreExamples=false", "cost.usdPerGpuHour.NVIDIA-H100-80GB-HBM3=3.1")
    book = price_book(env)
    assert not book.are_examples and book.price("NVIDIA-H100-80GB-HBM3") == 3.1
