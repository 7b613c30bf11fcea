"""How a rented container gets its files before vLLM starts: env chunks and a POSIX start script.

Providers take only an image, an entrypoint/args and env, so the files an engine needs (its TLS pair on
Vast.ai, the engine guard module everywhere) travel as base64 env chunks (`LLMSERVE_FILE_<i>_PATH`,
`LLMSERVE_FILE_<i>_<j>`; Vast caps each value at 256 characters). The container's entrypoint becomes
`sh -c START_SCRIPT llmserve-start vllm serve <vLLM args>`: the script rebuilds each file (mode 600),
puts the directory of each delivered `.py` file on PYTHONPATH (so `--middleware` can import it), and
then execs the image's own `vllm serve` with the args. Any failure exits before vLLM starts, so an
instance whose files did not arrive never serves: it cannot serve open.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

FILE_ENV_PREFIX = "LLMSERVE_FILE_"
FILE_CHUNK_CHARS = 240
START_NAME = "llmserve-start"  # $0 of the script, what `ps` shows
ENGINE_COMMAND = ("vllm", "serve")  # the vllm/vllm-openai image's own ENTRYPOINT
# POSIX sh, no bashisms; the image's sh, printenv, base64, mkdir and dirname (coreutils) only.
START_SCRIPT = (
    "umask 077; i=0; while p=$(printenv \"LLMSERVE_FILE_${i}_PATH\"); do d=''; j=0; "
    'while c=$(printenv "LLMSERVE_FILE_${i}_${j}"); do d="$d$c"; j=$((j+1)); done; '
    'mkdir -p "$(dirname "$p")" && printf %s "$d" | base64 -d > "$p" && chmod 600 "$p" || exit 1; '
    'case "$p" in *.py) export PYTHONPATH="$(dirname "$p")${PYTHONPATH:+:$PYTHONPATH}";; esac; '
    'i=$((i+1)); done; exec "$@"'
)
ENTRYPOINT = ("sh", "-c", START_SCRIPT, START_NAME)


def file_env(files: Mapping[str, str]) -> dict[str, str]:
    """Files as env chunks: LLMSERVE_FILE_<i>_PATH and LLMSERVE_FILE_<i>_<j> (base64 parts)."""
    env: dict[str, str] = {}
    for index, (path, text) in enumerate(sorted(files.items())):
        encoded = base64.b64encode(text.encode()).decode()
        env[f"{FILE_ENV_PREFIX}{index}_PATH"] = path
        for part in range(0, len(encoded), FILE_CHUNK_CHARS):
            env[f"{FILE_ENV_PREFIX}{index}_{part // FILE_CHUNK_CHARS}"] = encoded[
                part : part + FILE_CHUNK_CHARS
            ]
    return env


def files_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """The inverse of `file_env` (what the start script does inside the container)."""
    files: dict[str, str] = {}
    index = 0
    while (path := env.get(f"{FILE_ENV_PREFIX}{index}_PATH")) is not None:
        parts = []
        part = 0
        while (chunk := env.get(f"{FILE_ENV_PREFIX}{index}_{part}")) is not None:
            parts.append(chunk)
            part += 1
        files[path] = base64.b64decode("".join(parts)).decode()
        index += 1
    return files


def started_engine_args(command: list[str]) -> list[str] | None:
    """The vLLM args of a container command that runs the start script and then `vllm serve`, else None
    (for the fake provider, which must know what the container would run)."""
    head = [*ENTRYPOINT, *ENGINE_COMMAND]
    return command[len(head) :] if command[: len(head)] == head else None
