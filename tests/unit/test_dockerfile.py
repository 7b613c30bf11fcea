"""The image keeps its production shape: pinned base, build tools left behind, non-root, one entrypoint.

No container engine runs here, so these read the Dockerfile itself; CI's image job builds and runs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PINNED_BASE = re.compile(r"^python:\d+\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}$")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with comments dropped and `\\` continuations joined."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            pairs.append((instruction.upper(), " ".join(arguments.split())))
    return pairs


def _stages() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for instruction, arguments in _instructions((REPO / "Dockerfile").read_text()):
        if instruction == "FROM":
            stages.append([])
        if not stages and instruction == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
        elif stages:
            stages[-1].append((instruction, arguments))
    return global_args, stages


def _args(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [arguments for name, arguments in stage if name == instruction]


def test_base_image_is_pinned_by_exact_tag_and_digest_in_every_stage() -> None:
    global_args, stages = _stages()
    assert PINNED_BASE.match(global_args["PYTHON_IMAGE"]), global_args["PYTHON_IMAGE"]
    assert len(stages) >= 2, "multi-stage: build, then a final stage without the build tools"
    for stage in stages:
        base = _args(stage, "FROM")[0].split()[0]
        assert base == "${PYTHON_IMAGE}"


def test_final_stage_copies_the_built_venv_and_installs_nothing() -> None:
    _, stages = _stages()
    final = stages[-1]
    runs = " ".join(_args(final, "RUN"))
    assert "pip uninstall --yes --quiet pip setuptools wheel" in runs
    for build_tool in ("pip install", "apt-get", "gcc", "setup.py", "build-essential"):
        assert build_tool not in runs
    assert any(a.startswith("--from=build /opt/llmserve") for a in _args(final, "COPY"))
    assert not any("--from" not in a for a in _args(final, "COPY")), "no sources in the final stage"


def test_image_runs_as_the_charts_unprivileged_user_with_llmserve_as_entrypoint() -> None:
    _, stages = _stages()
    final = stages[-1]
    (user,) = _args(final, "USER")
    uid = int(user.split(":")[0])
    assert uid != 0
    for template in ("operator.yaml", "gateway.yaml"):
        assert f"runAsUser: {uid}" in (REPO / "charts/llmserve/templates" / template).read_text()
    assert json.loads(_args(final, "ENTRYPOINT")[-1]) == ["llmserve"]


def test_oci_labels_carry_source_version_and_revision_from_build_args() -> None:
    _, stages = _stages()
    final = stages[-1]
    labels = " ".join(_args(final, "LABEL"))
    for key, arg in (("source", "SOURCE"), ("version", "VERSION"), ("revision", "REVISION")):
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in labels
        assert any(a.startswith(f"{arg}=") for a in _args(final, "ARG"))


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: nothing reaches the build context unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    _, stages = _stages()
    copied = {
        source.rstrip("/").removeprefix("./")
        for stage in stages
        for arguments in _args(stage, "COPY")
        if not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert copied == allowed == {"pyproject.toml", "README.md", "operator"}


def test_simulator_pods_set_their_command_so_the_one_image_serves_them() -> None:
    from llmserve.api import LLMServe
    from llmserve.render.engine import render_deployment

    example = yaml.safe_load((REPO / "examples/llama-8b-simulated.yaml").read_text())
    spec = LLMServe.model_validate(example).spec
    container = render_deployment("llama-8b", "ai", "uid-1", spec)["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert container["command"] == ["llmserve", "sim", "engine"]
    image = yaml.safe_load((REPO / "charts/llmserve/values.yaml").read_text())["image"]["repository"]
    assert container["image"].rpartition(":")[0] == image
