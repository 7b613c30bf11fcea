"""Pure modules import without the operator: no kopf handler registered, no client made, no env read."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["llmserve.autoscale.spec", "llmserve.autoscale.demand_spec", "llmserve.engine_metrics", "llmserve.pods"],
)
def test_a_pure_module_imports_without_kopf(module: str) -> None:
    code = f"import sys, {module}; print('kopf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
