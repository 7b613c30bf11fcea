"""The fake cloud's "containers": each running instance is a real `llmserve sim engine` on loopback.

A container runs what a vllm/vllm-openai one would: the image's `vllm serve` with the instance's args,
or, when the entrypoint is llmserve's start script (burst.start_script), that script's effect first:
the files of the env chunks are written (under the instance's directory, at their container path),
the directories of delivered `.py` files go on PYTHONPATH, then `vllm serve` runs with the args that
follow. Any other entrypoint is a container this fake cannot run: no engine starts, as a broken
launch would never serve. The args keep their meaning (`--api-key`, `--middleware`,
`--ssl-certfile/--ssl-keyfile`, `--model`), except that the engine binds 127.0.0.1 on a free port,
which stands in for the provider's port mapping, and args naming a delivered file are pointed at it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from llmserve.burst.start_script import files_from_env, started_engine_args

log = logging.getLogger("llmserve.sim.provider.engines")

_DROPPED_FLAGS = ("--host", "--port")
STATE_ENV = "LLMSERVE_FAKE_PROVIDER_STATE_DIR"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_argv(args: list[str], port: int, file_map: dict[str, str], extra: list[str]) -> list[str]:
    """The instance args with --host/--port replaced and file paths re-rooted."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _DROPPED_FLAGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in _DROPPED_FLAGS:
            continue
        out.append(file_map.get(arg, arg))
    return [*out, "--host", "127.0.0.1", "--port", str(port), *extra]


class Engines:
    """Starts and stops instance engines; tracks them by pid so a restarted fake can find them."""

    def __init__(self, state_dir: Path, extra_args: list[str]) -> None:
        self.state_dir = state_dir
        self.extra_args = extra_args
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # start/stop run in worker threads; the lock and `closed` make sure no start slips past stop_all.
        self._lock = threading.Lock()
        self._closed = False

    def start(self, instance: dict[str, Any]) -> None:
        with self._lock:
            if self._closed:
                return
            self._start(instance)

    def _start(self, instance: dict[str, Any]) -> None:
        directory = self.state_dir / "instances" / instance["id"]
        directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in instance.get("env", {}).items() if k.isidentifier()}
        command = [*instance.get("entrypoint", []), *instance["args"]]
        args = list(instance["args"]) if not instance.get("entrypoint") else started_engine_args(command)
        if args is None:
            log.warning("event=engine_not_started instance=%s reason=unknown_entrypoint", instance["id"])
            return
        file_map: dict[str, str] = {}
        python_path: list[str] = []
        if instance.get("entrypoint"):  # only the start script writes the files
            for path, text in sorted(files_from_env(env).items()):
                local = directory / "root" / path.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(text)
                local.chmod(0o600)
                file_map[path] = str(local)
                if path.endswith(".py"):
                    python_path.insert(0, str(local.parent))
        port = free_port()
        argv = [sys.executable, "-m", "llmserve.cli", "sim", "engine",
                *engine_argv(args, port, file_map, self.extra_args)]  # fmt: skip
        process_env = {**os.environ, **{k: v for k, v in env.items() if not k.startswith("LLMSERVE_FILE_")}}
        process_env["PYTHONPATH"] = os.pathsep.join(
            [*python_path, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        process_env[STATE_ENV] = str(self.state_dir)  # lets a test find every engine of one fake
        with (directory / "engine.log").open("ab") as engine_log:
            process = subprocess.Popen(
                argv, env=process_env, stdout=engine_log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._children[instance["id"]] = process
        instance["engine_port"] = port
        instance["engine_pid"] = process.pid
        log.info("event=engine_started instance=%s port=%d pid=%d", instance["id"], port, process.pid)

    def alive(self, instance: dict[str, Any]) -> bool:
        pid = instance.get("engine_pid")
        if not pid:
            return False
        child = self._children.get(instance["id"])
        if child is not None:
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"sim\x00engine" in cmdline

    def stop(self, instance: dict[str, Any], timeout_seconds: float = 10.0) -> None:
        with self._lock:
            self._stop(instance, timeout_seconds)

    def _stop(self, instance: dict[str, Any], timeout_seconds: float) -> None:
        pid = instance.get("engine_pid")
        child = self._children.pop(instance["id"], None)
        if pid and (child is not None or self.alive(instance)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if child is not None:
                try:
                    child.wait(timeout=timeout_seconds)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    child.wait()
            log.info("event=engine_stopped instance=%s pid=%d", instance["id"], pid)
        instance["engine_pid"] = None
        instance["engine_port"] = None

    def stop_all(self, instances: list[dict[str, Any]]) -> None:
        """Stop every engine this process knows of, and refuse to start more."""
        with self._lock:
            self._closed = True
            for instance in instances:
                if instance.get("engine_pid") or instance["id"] in self._children:
                    self._stop(instance, 10.0)
