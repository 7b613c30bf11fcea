"""Release facts from one source of truth: pyproject's version sets the chart, the image tag and the docs.

`python -m hack.release check --tag v0.1.0` is what the release workflow runs before it publishes anything;
`python -m hack.release set-version 0.2.0` rewrites every place that carries the version, in one go.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = "pyproject.toml"
PACKAGE_INIT = "operator/llmserve/__init__.py"
API_MODULE = "operator/llmserve/api/llmserve.py"
CHART = "charts/llmserve/Chart.yaml"
CHART_VALUES = "charts/llmserve/values.yaml"
README = "README.md"

SOURCE_OF_TRUTH = f"{PYPROJECT} project.version"
# X.Y.Z only: it is a valid PEP 440 version (the package), SemVer 2 (Helm's chart version) and an OCI tag
# alike, so the same string can be written everywhere without translation.
VERSION_PATTERN = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_VERSION = r"\d+\.\d+\.\d+"


@dataclass(frozen=True)
class ReleaseFacts:
    """What a release publishes and where."""

    version: str
    image_repository: str  # the chart's image.repository: the image and the chart go to the same owner

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.version}"

    @property
    def chart_registry(self) -> str:
        """`helm push` target: oci://<registry>/<owner>/charts, beside the image."""
        return "oci://" + self.image_repository.rsplit("/", 1)[0] + "/charts"

    @property
    def chart_ref(self) -> str:
        return f"{self.chart_registry}/llmserve"


@dataclass(frozen=True)
class RepoFacts:
    """Everything the checks read from the working tree."""

    versions: Mapping[str, str]  # where -> the version written there
    image_repository: str
    image_tag_value: str  # values.yaml image.tag; "" means "the chart's appVersion"
    simulator_image: str  # the operator's default image for engine.kind: simulator
    readme: str


def _python_constant(path: Path, name: str) -> str:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    raise ValueError(f"{path}: no string constant {name}")


def read_repo(root: Path = ROOT) -> RepoFacts:
    pyproject = tomllib.loads((root / PYPROJECT).read_text())
    chart = yaml.safe_load((root / CHART).read_text())
    image = yaml.safe_load((root / CHART_VALUES).read_text())["image"]
    simulator_image = _python_constant(root / API_MODULE, "DEFAULT_SIMULATOR_IMAGE")
    versions = {
        SOURCE_OF_TRUTH: str(pyproject["project"]["version"]),
        f"{PACKAGE_INIT} __version__": _python_constant(root / PACKAGE_INIT, "__version__"),
        f"{CHART} version": str(chart["version"]),
        f"{CHART} appVersion": str(chart["appVersion"]),
        f"{API_MODULE} DEFAULT_SIMULATOR_IMAGE tag": simulator_image.rpartition(":")[2],
    }
    return RepoFacts(
        versions=versions,
        image_repository=str(image["repository"]),
        image_tag_value=str(image.get("tag") or ""),
        simulator_image=simulator_image,
        readme=(root / README).read_text(),
    )


def release_problems(repo: RepoFacts, tag: str | None = None, owner: str | None = None) -> list[str]:
    """Every reason the tree is not releasable as it stands; empty when it is."""
    version = repo.versions[SOURCE_OF_TRUTH]
    facts = ReleaseFacts(version, repo.image_repository)
    problems: list[str] = []
    if not VERSION_PATTERN.match(version):
        problems.append(f"{SOURCE_OF_TRUTH} is {version!r}: a release version must be X.Y.Z")
    for where, found in repo.versions.items():
        if found != version:
            problems.append(f"{where} is {found!r} but {SOURCE_OF_TRUTH} is {version!r}")
    if repo.image_tag_value not in ("", version):
        problems.append(
            f"{CHART_VALUES} image.tag is {repo.image_tag_value!r}: leave it empty so it follows appVersion"
        )
    if repo.simulator_image != facts.image:
        problems.append(
            f"{API_MODULE} DEFAULT_SIMULATOR_IMAGE is {repo.simulator_image!r}; simulator pods run the "
            f"release image {facts.image!r}"
        )
    for stale in sorted(set(stale_readme_references(repo.readme, facts))):
        problems.append(f"{README} refers to {stale!r}; this release is {version}")
    if f"{facts.chart_ref} --version {version}" not in repo.readme:
        problems.append(
            f"{README} has no install command `helm install ... {facts.chart_ref} --version {version}`"
        )
    if tag is not None and tag != f"v{version}":
        problems.append(f"tag {tag!r} does not match {SOURCE_OF_TRUTH} {version!r}: tag v{version}")
    if owner is not None and not repo.image_repository.lower().startswith(f"ghcr.io/{owner.lower()}/"):
        problems.append(
            f"{CHART_VALUES} image.repository {repo.image_repository!r} is not under ghcr.io/{owner.lower()}/: "
            "this repository's token cannot push there (a fork: change image.repository and "
            f"DEFAULT_SIMULATOR_IMAGE in {API_MODULE})"
        )
    return problems


def stale_readme_references(readme: str, facts: ReleaseFacts) -> list[str]:
    """Published image or chart references in the README that name another version."""
    image = re.escape(facts.image_repository)
    chart = re.escape(facts.chart_ref)
    stale = [m.group(0) for m in re.finditer(rf"{image}:({_VERSION})", readme) if m.group(1) != facts.version]
    stale += [
        m.group(0)
        for m in re.finditer(rf"{chart} --version ({_VERSION})", readme)
        if m.group(1) != facts.version
    ]
    return stale


def set_version(root: Path, new_version: str) -> None:
    """Writes new_version everywhere the version lives (the check above lists the same places)."""
    if not VERSION_PATTERN.match(new_version):
        raise SystemExit(f"set-version: {new_version!r} is not X.Y.Z")
    repo = read_repo(root)
    old = ReleaseFacts(repo.versions[SOURCE_OF_TRUTH], repo.image_repository)
    new = ReleaseFacts(new_version, repo.image_repository)
    edits: dict[str, list[tuple[str, str]]] = {
        PYPROJECT: [(rf'(?m)^version = "{_VERSION}"$', f'version = "{new_version}"')],
        PACKAGE_INIT: [(rf'(?m)^__version__ = "{_VERSION}"$', f'__version__ = "{new_version}"')],
        CHART: [
            (rf"(?m)^version: {_VERSION}$", f"version: {new_version}"),
            (rf'(?m)^appVersion: "?{_VERSION}"?$', f'appVersion: "{new_version}"'),
        ],
        API_MODULE: [(r'(?m)^DEFAULT_SIMULATOR_IMAGE = "[^"]*"', f'DEFAULT_SIMULATOR_IMAGE = "{new.image}"')],
        README: [
            (rf"{re.escape(repo.image_repository)}:{_VERSION}", new.image),
            (rf"{re.escape(old.chart_ref)} --version {_VERSION}", f"{new.chart_ref} --version {new_version}"),
        ],
    }
    for relative, substitutions in edits.items():
        path = root / relative
        text = path.read_text()
        for pattern, replacement in substitutions:
            text, count = re.subn(pattern, replacement, text)
            if count == 0:
                raise SystemExit(f"set-version: {relative}: nothing matched {pattern!r}")
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.release", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the release version (pyproject's)")
    check = sub.add_parser("check", help="fail unless every version agrees (and the tag, when given)")
    check.add_argument("--tag", help="the git tag being released, e.g. v0.1.0")
    check.add_argument("--owner", help="the GitHub owner publishing (its GHCR namespace)")
    check.add_argument(
        "--github-output", action="store_true", help="print version=, image=, chart_registry= lines"
    )
    bump = sub.add_parser("set-version", help="write a new X.Y.Z everywhere the version lives")
    bump.add_argument("version")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command == "set-version":
        set_version(args.root, args.version)
    repo = read_repo(args.root)
    facts = ReleaseFacts(repo.versions[SOURCE_OF_TRUTH], repo.image_repository)
    if args.command == "version":
        print(facts.version)
        return 0
    problems = release_problems(repo, getattr(args, "tag", None), getattr(args, "owner", None))
    for problem in problems:
        print(f"release: {problem}", file=sys.stderr)
    if problems:
        return 1
    if getattr(args, "github_output", False):
        print(f"version={facts.version}\nimage={facts.image}\nimage_repository={facts.image_repository}")
        print(f"chart_registry={facts.chart_registry}\nchart_ref={facts.chart_ref}")
    elif args.command == "check":
        print(f"release {facts.version}: image {facts.image}, chart {facts.chart_ref}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
