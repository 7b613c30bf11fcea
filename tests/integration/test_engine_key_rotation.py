"""Rotating the engine-key master on the dev cluster loses no request.

The documented procedure (docs/security.md): move the Secret's `master-key` to `previous-master-key`,
put a new `master-key`, restart the operator. The gateway follows the Secret at once and sends the new
key; replicas started before the rotation still hold the old one, so on their 401 the gateway retries
with the key from the previous master, until the operator has rolled the engine pods to the new key.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from typing import Any

import httpx
import openai
import pytest

from tests.integration import test_gateway_cluster as gateway_cluster
from tests.integration.test_gateway_cluster import KubeGateway, llmserve, wait_ready
from tests.support.cluster import ClusterHandle, OperatorProcess, wait_for

pytestmark = pytest.mark.cluster
gateway = gateway_cluster.gateway  # the fixture: a gateway discovering this test's namespace

MASTER = ("llmserve-engine-key-master", "default")  # the test operator's and gateway's default
FINGERPRINT = "llmserve.dev/engine-key-fingerprint"


def fallbacks(gateway: KubeGateway) -> float:
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llmserve_gateway_engine_key_fallbacks_total ")
    )


def pods(cluster: ClusterHandle, namespace: str) -> list[dict[str, Any]]:
    return cluster.list("pods", namespace, "llmserve.dev/llmserve=rot")


def test_rotating_the_engine_key_master_fails_no_request_while_the_engines_roll(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str, gateway: KubeGateway
) -> None:
    cluster.apply(llmserve("rot", replicas=1, model={"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": "rot"}),
                  namespace)  # fmt: skip
    wait_ready(cluster, namespace, "rot", 1)
    wait_for(lambda: "rot" in gateway.models(), timeout=30, message="model listed by the gateway")
    (old_pod,) = pods(cluster, namespace)
    old_fingerprint = old_pod["metadata"]["annotations"][FINGERPRINT]

    ok, failures, stop = [0], [], threading.Event()

    def load() -> None:
        client = gateway.client(timeout=30)
        while not stop.is_set():
            try:
                client.completions.create(model="rot", prompt="x", max_tokens=2)
                ok[0] += 1
            except openai.APIError as err:
                failures.append(f"{type(err).__name__}: {err}")

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for(lambda: ok[0] >= 5, timeout=30, message="requests flowing")
        master = cluster.get("secret", *MASTER)
        assert master is not None
        new_master = base64.b64encode(secrets.token_bytes(32)).decode()
        patch = {"data": {"master-key": new_master, "previous-master-key": master["data"]["master-key"]}}
        cluster.kubectl(
            "patch", "secret", MASTER[0], "-n", MASTER[1], "--type=merge", "-p", json.dumps(patch)
        )
        # The gateway sends the new key at once; the old replica refuses it and takes the previous one.
        wait_for(lambda: fallbacks(gateway) >= 3, timeout=30, interval=0.2, message="previous key used")
        assert failures == [], failures[:3]
        operator_process.restart()  # re-derives every engine key: the pods roll to the new one

        def rolled() -> bool:
            current = pods(cluster, namespace)
            return (
                len(current) == 1
                and current[0]["metadata"]["name"] != old_pod["metadata"]["name"]
                and current[0]["metadata"]["annotations"][FINGERPRINT] != old_fingerprint
                and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in current[0]["status"]["conditions"]
                )
            )

        wait_for(rolled, timeout=90, interval=0.5, message="engine pod rolled to the new key")
        used, served = fallbacks(gateway), ok[0]
        wait_for(lambda: ok[0] >= served + 10, timeout=30, message="requests on the new pod")
        assert fallbacks(gateway) == used  # the new pod takes the new key directly
    finally:
        stop.set()
        worker.join(timeout=60)
    assert failures == [], f"{len(failures)} failed, {ok[0]} ok: {failures[:3]}"
    log = "\n".join(gateway.log_path.read_text().splitlines()[gateway.first_line :])
    assert "upstream_auth_failed" not in log and "event=backend_auth_failed" not in log
