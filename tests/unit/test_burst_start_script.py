"""The start script of a rented container, run with real `sh`, and how each provider's create carries it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llmserve.burst.runpod import container_args
from llmserve.burst.runpod import create_body as runpod_create_body
from llmserve.burst.security import GUARD_MIDDLEWARE, GUARD_PATH, EngineRequest, vllm_launch_spec
from llmserve.burst.start_script import (
    ENGINE_COMMAND,
    ENTRYPOINT,
    START_SCRIPT,
    file_env,
    files_from_env,
    started_engine_args,
)
from llmserve.burst.types import Offer
from llmserve.burst.vastai import create_body as vast_create_body
from llmserve.sim.provider.runpod_api import start_command

REQUEST = EngineRequest(cluster_id="c0ffee42", owner="ai/llama-8b", slot=0, image="vllm/vllm-openai:v0.11.0",
                        model="m", served_model_name="llama", gpu_type="RTX 4090", gpus=1, max_usd_per_hour=1.0,
                        env={"HF_TOKEN": "hf_x"})  # fmt: skip
RUNPOD_OFFER = Offer(
    "runpod", "NVIDIA GeForce RTX 4090", 1, 0.44, "US-KS-2", "NVIDIA GeForce RTX 4090|SECURE|US-KS-2"
)
SH_ENV = {"PATH": "/usr/bin:/bin"}


def run_start_script(files: dict[str, str], *command: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["sh", "-c", START_SCRIPT, "llmserve-start", *command],
        env={**SH_ENV, **(env or {}), **file_env(files)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_files_travel_in_env_chunks_within_the_256_character_limit() -> None:
    files = {"/run/t/cert.pem": "C" * 700 + "\n", "/run/t/key.pem": "K" * 300}
    env = file_env(files)
    assert all(len(value) <= 256 for value in env.values())
    assert files_from_env(env) == files


def test_start_script_really_writes_the_files_with_sh_then_runs_the_command(tmp_path: Path) -> None:
    files = {str(tmp_path / "tls" / "cert.pem"): "-----BEGIN CERTIFICATE-----\n" + "A" * 900 + "\n",
             str(tmp_path / "tls" / "key.pem"): "secret\n"}  # fmt: skip
    out = run_start_script(files, "sh", "-c", 'echo "ran with $# args: $*"', "x", "--model", "m")
    for path, text in files.items():
        assert Path(path).read_text() == text
        assert Path(path).stat().st_mode & 0o777 == 0o600
    assert out.strip() == "ran with 2 args: --model m"


def test_start_script_puts_the_guard_module_on_pythonpath_where_python_imports_it(tmp_path: Path) -> None:
    spec, _ = vllm_launch_spec("runpod", REQUEST)
    guard_path = str(tmp_path / GUARD_PATH.lstrip("/"))
    files = {guard_path: spec.files[GUARD_PATH]}
    module, _, cls = GUARD_MIDDLEWARE.rpartition(".")
    # What vLLM does with --middleware: import the module named by the import path.
    program = (f"import importlib, sys; g = getattr(importlib.import_module({module!r}), {cls!r})(None); "
               "print(g.allows('POST', '/invocations', None), g.allows('POST', '/invocations', b'Bearer k'))")  # fmt: skip
    out = run_start_script(files, sys.executable, "-S", "-c", program, "--api-key", "k",
                           env={"PYTHONPATH": "/nonexistent"})  # fmt: skip
    assert out.split() == ["False", "True"]
    assert Path(guard_path).read_text() == spec.files[GUARD_PATH]


def test_start_script_stops_before_the_engine_when_a_file_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    marker = tmp_path / "engine-ran"
    done = subprocess.run(
        ["sh", "-c", START_SCRIPT, "llmserve-start", "touch", str(marker)],
        env={**SH_ENV, **file_env({str(blocker / "guard.py"): "x = 1\n"})},
        capture_output=True,
    )
    assert done.returncode != 0 and not marker.exists()


def test_every_rented_engine_runs_the_start_script_and_loads_the_guard() -> None:
    for provider in ("runpod", "vastai"):
        spec, secrets = vllm_launch_spec(provider, REQUEST)
        assert spec.entrypoint == ENTRYPOINT
        args = list(spec.args)
        assert args[:2] == list(ENGINE_COMMAND)
        assert args[args.index("--middleware") + 1] == GUARD_MIDDLEWARE
        assert args[args.index("--api-key") + 1] == secrets.api_key
        assert "class EngineKeyGuard" in spec.files[GUARD_PATH]
        assert started_engine_args([*spec.entrypoint, *spec.args]) == args[2:]


def test_runpod_create_overrides_the_entrypoint_in_its_json_start_command_form() -> None:
    spec, secrets = vllm_launch_spec("runpod", REQUEST)
    body = runpod_create_body(spec, RUNPOD_OFFER)
    command = json.loads(body["args"])
    assert command == {"cmd": list(spec.args), "entrypoint": list(ENTRYPOINT)}
    assert files_from_env(body["env"]) == spec.files and body["env"]["HF_TOKEN"] == "hf_x"
    assert start_command(body["args"]) == (list(ENTRYPOINT), list(spec.args))  # the fake reads it back
    assert start_command("--model m --port 8000") == ([], ["--model", "m", "--port", "8000"])
    plain = container_args(spec.__class__(**{**spec.__dict__, "entrypoint": ()}))
    assert plain.startswith("vllm serve --model m")
    assert secrets.api_key not in repr(spec)


def test_vast_create_overrides_the_entrypoint_with_onstart_and_fits_its_limits() -> None:
    spec, _ = vllm_launch_spec("vastai", REQUEST)
    body = vast_create_body(spec)
    assert body["runtype"] == "args" and body["onstart"] == "sh"
    assert body["args"] == [*ENTRYPOINT[1:], *spec.args]
    assert files_from_env(body["env"]) == spec.files  # the guard module and the TLS pair
    assert all(len(v) <= 256 for v in body["env"].values())
    assert sum(len(k) + len(v) for k, v in body["env"].items()) < 32768  # Vast's total env limit
    assert len(body["onstart"]) + sum(len(a) for a in body["args"]) <= 4096  # args + onstart limit


def test_the_guard_module_shipped_is_this_checkout_s_engine_guard() -> None:
    spec, _ = vllm_launch_spec("vastai", REQUEST)
    here = Path(__file__).parents[2] / "operator" / "llmserve" / "burst" / "engine_guard.py"
    assert spec.files[GUARD_PATH] == here.read_text()
    assert os.path.basename(GUARD_PATH) == GUARD_MIDDLEWARE.split(".")[0] + ".py"
