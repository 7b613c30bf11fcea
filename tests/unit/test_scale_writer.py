"""The one /scale writer clamps what it writes to the spec's bounds (as the CRD's CEL rule demands)."""

from __future__ import annotations

import pytest

from llmserve.api.llmserve import LLMServeSpec
from llmserve.scale import clamp_replicas


@pytest.mark.parametrize(("asked", "written"), [(0, 0), (1, 1), (3, 3), (9, 4)])
def test_a_count_beyond_the_bounds_is_clamped(asked: int, written: int) -> None:
    spec = LLMServeSpec.model_validate({"model": {"name": "m"}, "minReplicas": 0, "maxReplicas": 4})
    assert clamp_replicas(asked, spec) == written


def test_waking_a_model_whose_minimum_is_two_writes_two() -> None:
    spec = LLMServeSpec.model_validate({"model": {"name": "m"}, "minReplicas": 2, "maxReplicas": 4})
    assert clamp_replicas(1, spec) == 2
