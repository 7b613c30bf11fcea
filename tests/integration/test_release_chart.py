"""The chart as the release workflow publishes it, with the real helm: packaged at pyproject's version,
pointing at the image the same release pushes, and installable the way the README says."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from hack.release import SOURCE_OF_TRUTH, ReleaseFacts, read_repo
from tests.support.helm import build_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"


@pytest.fixture(scope="module")
def helm() -> str:
    return build_helm()


@pytest.fixture(scope="module")
def facts() -> ReleaseFacts:
    repo = read_repo(REPO)
    return ReleaseFacts(repo.versions[SOURCE_OF_TRUTH], repo.image_repository)


def test_packaged_chart_carries_the_release_version_as_chart_and_app_version(
    helm: str, facts: ReleaseFacts, tmp_path: Path
) -> None:
    # The same two commands as the release workflow's chart job.
    subprocess.run([helm, "lint", "--strict", str(CHART)], check=True, capture_output=True)
    subprocess.run(
        [helm, "package", str(CHART), "--destination", str(tmp_path)], check=True, capture_output=True
    )
    package = tmp_path / f"llmserve-{facts.version}.tgz"
    assert [p.name for p in tmp_path.iterdir()] == [package.name]
    with tarfile.open(package) as archive:
        member = archive.extractfile("llmserve/Chart.yaml")
        assert member is not None
        chart = yaml.safe_load(member.read())
    assert (chart["version"], chart["appVersion"]) == (facts.version, facts.version)


def test_default_install_runs_the_image_the_same_release_publishes(helm: str, facts: ReleaseFacts) -> None:
    rendered = subprocess.run(
        [helm, "template", "llmserve", str(CHART), "-n", "llmserve-system"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    deployments = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    images = {
        d["metadata"]["name"]: [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]
        for d in deployments
    }
    assert images == {
        "llmserve-operator": [facts.image],
        "llmserve-gateway": [facts.image],
    }
    # The README and the CI kind job reach the gateway by this Service name.
    services = [d["metadata"]["name"] for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Service"]
    assert "llmserve-gateway" in services
    for path in (REPO / "README.md", REPO / ".github/workflows/ci.yml"):
        assert "svc/llmserve-gateway 8080:80" in path.read_text(), path
