"""The helm CLI for tests: built from its Go module by hack/build-helm.sh (cached by version)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_helm() -> str:
    """The path of the helm binary, built on first use; raises if it cannot be built (never a skip)."""
    built = subprocess.run(
        ["bash", str(REPO / "hack" / "build-helm.sh")], capture_output=True, text=True, check=True
    )
    return built.stdout.strip().splitlines()[-1]
