"""hack/lint-scripts.sh (shellcheck + actionlint in `make test`) passes this tree and fails a broken one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tree(tmp_path: Path) -> Path:
    """A copy of what the linter reads: hack/ scripts, .ci/run and the workflows."""
    for relative in ("hack/lint-scripts.sh", "hack/build-actionlint.sh", "hack/kind.sh", ".ci/run"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, tmp_path / relative)
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(tree / "hack/lint-scripts.sh")], capture_output=True, text=True, timeout=600
    )


def test_the_repository_scripts_and_workflows_pass(tmp_path: Path) -> None:
    result = _lint(_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hack/kind.sh" in result.stdout and ".ci/run" in result.stdout
    assert ".github/workflows/release.yml" in result.stdout


def test_an_unquoted_variable_in_a_hack_script_fails_the_lint(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    (tree / "hack/broken.sh").write_text("#!/usr/bin/env bash\nrm -rf $1/cache\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "hack/broken.sh" in result.stdout and "SC2086" in result.stdout


def test_a_misspelt_action_input_fails_the_lint(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    release = tree / ".github/workflows/release.yml"
    release.write_text(release.read_text().replace("provenance: mode=max", "provenanse: mode=max"))
    result = _lint(tree)
    assert result.returncode != 0
    assert 'input "provenanse" is not defined' in result.stdout
