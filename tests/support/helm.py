"""The helm CLI for tests: built from its Go module by hack/build-helm.sh (cached by version)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build_helm() -> str:
    """The path of the helm binary, built on first use; fails the test with the build's output if it
    cannot be built (never a skip: a silent skip hides a broken build)."""
    try:
        built = subprocess.run(
            ["bash", str(REPO / "hack" / "build-helm.sh")], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as err:
        stderr = getattr(err, "stderr", "") or ""
        pytest.fail(f"hack/build-helm.sh could not build helm: {err}\n{stderr[-2000:]}")
    return built.stdout.strip().splitlines()[-1]
