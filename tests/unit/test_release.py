"""One version everywhere a release publishes it, and a tag that disagrees is refused before anything ships."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hack import release
from hack.release import SOURCE_OF_TRUTH, ReleaseFacts, read_repo, release_problems, set_version

REPO = Path(__file__).resolve().parents[2]


def test_every_version_and_image_reference_agrees_with_pyproject() -> None:
    repo = read_repo(REPO)
    assert release_problems(repo) == []
    version = repo.versions[SOURCE_OF_TRUTH]
    assert set(repo.versions.values()) == {version}
    assert repo.simulator_image == f"{repo.image_repository}:{version}"


def test_chart_image_tag_is_left_to_follow_app_version() -> None:
    values = yaml.safe_load((REPO / "charts/llmserve/values.yaml").read_text())
    helpers = (REPO / "charts/llmserve/templates/_helpers.tpl").read_text()
    assert values["image"]["tag"] == ""
    assert "default .Chart.AppVersion .Values.image.tag" in helpers


def test_a_chart_app_version_that_disagrees_is_named_with_both_versions() -> None:
    repo = read_repo(REPO)
    versions = {**repo.versions, "charts/llmserve/Chart.yaml appVersion": "9.9.9"}
    problems = release_problems(dataclasses.replace(repo, versions=versions))
    assert problems == [
        f"charts/llmserve/Chart.yaml appVersion is '9.9.9' but {SOURCE_OF_TRUTH} is "
        f"'{repo.versions[SOURCE_OF_TRUTH]}'"
    ]


def test_a_tag_that_does_not_match_the_version_is_refused() -> None:
    repo = read_repo(REPO)
    version = repo.versions[SOURCE_OF_TRUTH]
    assert release_problems(repo, tag=f"v{version}") == []
    (problem,) = release_problems(repo, tag="v99.0.0")
    assert "tag 'v99.0.0'" in problem and f"v{version}" in problem


def test_publishing_from_an_owner_that_cannot_push_to_the_image_namespace_is_refused() -> None:
    repo = read_repo(REPO)
    assert (
        release_problems(repo, owner="LLMServe") == []
    )  # GitHub owners are case-insensitive, GHCR lowercase
    (problem,) = release_problems(repo, owner="someone-else")
    assert "ghcr.io/someone-else/" in problem and "image.repository" in problem


def test_a_version_that_is_not_plain_semver_is_refused() -> None:
    repo = read_repo(REPO)
    versions = dict.fromkeys(repo.versions, "1.0.0rc1")
    problems = release_problems(dataclasses.replace(repo, versions=versions))
    assert any("must be X.Y.Z" in p for p in problems)


def test_a_stale_readme_install_reference_is_reported() -> None:
    repo = read_repo(REPO)
    facts = ReleaseFacts(repo.versions[SOURCE_OF_TRUTH], repo.image_repository)
    readme = repo.readme + f"\n    docker pull {facts.image_repository}:0.0.1\n"
    problems = release_problems(dataclasses.replace(repo, readme=readme))
    assert problems == [
        f"README.md refers to '{facts.image_repository}:0.0.1'; this release is {facts.version}"
    ]


def test_set_version_rewrites_every_place_so_the_new_tag_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for relative in (release.PYPROJECT, release.PACKAGE_INIT, release.API_MODULE, release.CHART,
                     release.CHART_VALUES, release.README):  # fmt: skip
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, tmp_path / relative)

    set_version(tmp_path, "0.42.7")

    repo = read_repo(tmp_path)
    assert set(repo.versions.values()) == {"0.42.7"}
    assert release_problems(repo, tag="v0.42.7") == []
    assert release.main(["--root", str(tmp_path), "check", "--tag", "v0.42.7", "--github-output"]) == 0
    outputs = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert outputs["version"] == "0.42.7"
    assert outputs["image"] == f"{repo.image_repository}:0.42.7"
    assert outputs["chart_registry"] == "oci://" + repo.image_repository.rsplit("/", 1)[0] + "/charts"
    assert release.main(["--root", str(tmp_path), "check", "--tag", "v0.1.0"]) == 1
    assert "tag 'v0.1.0' does not match" in capsys.readouterr().err


def test_set_version_refuses_a_version_helm_or_pip_would_read_differently(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"not X\.Y\.Z"):
        set_version(tmp_path, "v1.0")


def _workflow(name: str) -> dict:
    document = yaml.safe_load((REPO / ".github/workflows" / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def _steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def test_ci_runs_the_readme_test_command_on_pull_requests() -> None:
    ci = _workflow("ci.yml")
    assert "pull_request" in ci["on"] and "workflow_call" in ci["on"]
    runs = " ".join(step.get("run", "") for step in _steps(ci, "test"))
    assert "bash .ci/run" in runs
    assert (REPO / ".ci/run").read_text().rstrip().endswith("exec make test")
    dry_run = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "hack/lint-scripts.sh" in dry_run.stdout  # shellcheck and actionlint are part of `make test`


def test_release_checks_the_tag_then_publishes_a_multi_arch_image_with_attestations_and_the_chart() -> None:
    workflow = _workflow("release.yml")
    assert workflow["on"] == {"push": {"tags": ["v*"]}}
    meta = " ".join(step.get("run", "") for step in _steps(workflow, "meta"))
    assert 'python -m hack.release check --tag "$GITHUB_REF_NAME"' in meta
    assert workflow["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"
    assert set(workflow["jobs"]["image"]["needs"]) == {"meta", "test"}
    (build,) = [
        s for s in _steps(workflow, "image") if s.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["push"] is True and build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert build["with"]["tags"] == "${{ needs.meta.outputs.image }}"
    assert "VERSION=${{ needs.meta.outputs.version }}" in build["with"]["build-args"]
    assert "REVISION=${{ github.sha }}" in build["with"]["build-args"]
    assert "image" in workflow["jobs"]["chart"]["needs"]  # the chart never points at an unpublished image
    chart = " ".join(step.get("run", "") for step in _steps(workflow, "chart"))
    assert '"$HELM" push "dist/llmserve-$VERSION.tgz" "$CHART_REGISTRY"' in chart
