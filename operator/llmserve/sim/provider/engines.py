"""The fake cloud's "containers": each running instance is a real `llmserve sim engine` on loopback.

The instance's own args are kept (so `--api-key`, `--ssl-certfile/--ssl-keyfile`, `--model` mean
what they mean on a real GPU), except that the engine binds 127.0.0.1 on a free port, which stands
in for the provider's port mapping. Files delivered through the Vast env chunks (what the `onstart`
script writes inside a real container) are written under the instance's directory, and the args
that name them are pointed there.
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

from llmserve.burst.vastai import files_from_env

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
        file_map = {}
        for index, (path, text) in enumerate(sorted(files_from_env(env).items())):
            local = directory / f"file-{index}-{Path(path).name}"
            local.write_text(text)
            local.chmod(0o600)
            file_map[path] = str(local)
        port = free_port()
        argv = [sys.executable, "-m", "llmserve.cli", "sim", "engine",
                *engine_argv(list(instance["args"]), port, file_map, self.extra_args)]  # fmt: skip
        process_env = {**os.environ, **{k: v for k, v in env.items() if not k.startswith("LLMSERVE_FILE_")}}
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
