"""Every `vllm serve` flag llmserve writes or reads exists in the default release and the previous default.

tests/data/vllm-<version>-serve-flags.txt list the flags of `vllm serve` in vLLM 0.33.0 and 0.11.0,
recorded from the release wheels by hack/vllm_serve_flags.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest

from llmserve.api import LLMServeSpec
from llmserve.burst.security import EngineRequest, vllm_launch_spec
from llmserve.engine_metrics_names import VLLM_VERSION
from llmserve.plan import engineargs
from llmserve.render.engine import engine_args

DATA = Path(__file__).resolve().parents[1] / "data"
RELEASES = (VLLM_VERSION, "0.11.0")
# Flags llmserve reads out of a user's engine args (plan/engineargs.py; the gateway and the autoscaler
# read --max-num-seqs) or documents as examples.
READ = {"--max-num-seqs", "--max-model-len", *(f for f in vars(engineargs)["_FLAGS"] if f.startswith("--"))}


@cache
def flags_of(version: str) -> frozenset[str]:
    lines = (DATA / f"vllm-{version}-serve-flags.txt").read_text().splitlines()
    return frozenset(line for line in lines if line.startswith("--"))


def written_flags() -> set[str]:
    """The flags of a rendered engine Deployment and of both rented-engine launch specs."""
    spec = LLMServeSpec.model_validate(
        {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "revision": "main"}, "resources": {"gpus": 2}}
    )
    args = list(engine_args("llama", spec))
    request = EngineRequest(cluster_id="c0ffee42", owner="ai/llama", slot=0, image="vllm/vllm-openai:v0.33.0",
                            model="meta-llama/Llama-3.1-8B-Instruct", served_model_name="llama",
                            gpu_type="NVIDIA H100 80GB HBM3", gpus=2, max_usd_per_hour=6.0)  # fmt: skip
    for provider in ("runpod", "vastai"):
        launch, _ = vllm_launch_spec(provider, request, datetime(2026, 11, 30, tzinfo=UTC))
        args += launch.args
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def test_the_rendered_and_launched_engines_use_the_flags_under_test() -> None:
    assert written_flags() >= {"--served-model-name", "--host", "--port", "--tensor-parallel-size", "--revision",
                               "--model", "--api-key", "--ssl-certfile", "--ssl-keyfile", "--middleware"}  # fmt: skip


@pytest.mark.parametrize("version", RELEASES)
def test_every_flag_llmserve_writes_is_accepted_by_vllm_serve(version: str) -> None:
    assert written_flags() - flags_of(version) == set()


@pytest.mark.parametrize("version", RELEASES)
def test_every_flag_llmserve_reads_from_engine_args_exists(version: str) -> None:
    assert READ - flags_of(version) == set()
