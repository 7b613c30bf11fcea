"""The fake kubelet's reading of containers, and the kube-proxy stand-in's choice of endpoint (pure)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from hack.devcluster.containers import container_env, engine_argv, llmserve_argv, readiness, run_pre_stop
from tests.support.service_proxy import Endpoints

GATEWAY: dict[str, Any] = {
    "name": "gateway",
    "command": ["llmserve", "gateway"],
    "args": ["--host=0.0.0.0", "--port=8080", "--metrics-host", "0.0.0.0", "--metrics-port=9091"],
    "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9091}],
    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
    "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
}


def test_an_llmserve_command_runs_this_checkouts_cli_bound_to_the_pod_ip() -> None:
    argv = llmserve_argv(GATEWAY, "10.9.0.12")
    assert argv is not None and argv[1:4] == ["-m", "llmserve.cli", "gateway"]
    assert argv[4:] == [
        "--host=10.9.0.12",
        "--port=8080",
        "--metrics-host",
        "10.9.0.12",
        "--metrics-port=9091",
    ]


def test_engine_commands_become_the_simulator_and_other_images_run_nothing() -> None:
    engine = {"command": ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"], "args": ["--max-num-seqs=8"]}
    argv = engine_argv(engine, "NVIDIA-L4", "10.9.0.13", ("--time-scale=20",))
    assert argv is not None and argv[3:6] == ["sim", "engine", "meta-llama/Llama-3.1-8B-Instruct"]
    assert argv.index("--time-scale=20") < argv.index("--max-num-seqs=8") < argv.index("--host")
    assert llmserve_argv(engine, "10.9.0.13") is None
    assert llmserve_argv({"command": ["nginx"]}, "10.9.0.13") is None


def test_readiness_follows_the_probes_named_port_and_threshold_probing_at_least_as_often_as_asked() -> None:
    probe = readiness(GATEWAY, "10.9.0.12", max_period_seconds=0.3)
    assert probe.url == "http://10.9.0.12:8080/ready"
    assert (probe.period_seconds, probe.failure_threshold) == (0.3, 3)
    assert readiness({"name": "x"}, "10.9.0.12", 0.3).url is None  # no probe: ready while running


def test_the_downward_api_gives_the_pod_its_namespace() -> None:
    pod = {"metadata": {"name": "gw-1", "namespace": "ai", "uid": "u"}, "spec": {"nodeName": "gpu-node-0"}}
    assert asyncio.run(container_env(pod, GATEWAY, "10.9.0.12")) == {"POD_NAMESPACE": "ai"}


def test_a_pre_stop_sleep_runs_and_is_cut_when_the_grace_period_ends() -> None:
    container = {"lifecycle": {"preStop": {"exec": {"command": ["sleep", "0.2"]}}}}
    started = time.monotonic()
    assert asyncio.run(run_pre_stop(container, "10.9.0.12", 5)) == "exec-sleep"
    assert time.monotonic() - started >= 0.2
    long_sleep = {"lifecycle": {"preStop": {"sleep": {"seconds": 30}}}}
    assert asyncio.run(run_pre_stop(long_sleep, "10.9.0.12", 0.1)) == "timed-out"
    assert asyncio.run(run_pre_stop({}, "10.9.0.12", 1)) == "none"


def _slice(*endpoints: tuple[str, dict[str, bool]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "gw-abc"},
        "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9091}],
        "endpoints": [{"addresses": [ip], "conditions": c} for ip, c in endpoints],
    }


def test_new_connections_go_to_ready_endpoints_then_to_terminating_ones_that_still_serve() -> None:
    endpoints, rng = Endpoints("http"), random.Random(1)
    terminating = {"ready": False, "serving": True, "terminating": True}
    endpoints.replace([_slice(("10.9.0.12", terminating), ("10.9.0.13", {"ready": True}))])
    assert {endpoints.choose(rng) for _ in range(20)} == {("10.9.0.13", 8080)}
    endpoints.apply("MODIFIED", _slice(("10.9.0.12", terminating)))
    assert endpoints.choose(rng) == ("10.9.0.12", 8080)  # kube-proxy's fallback
    endpoints.apply(
        "MODIFIED", _slice(("10.9.0.12", {"ready": False, "serving": False, "terminating": True}))
    )
    assert endpoints.choose(rng) is None
    endpoints.apply("DELETED", _slice())
    assert endpoints.slices == {}
