"""Engine pods are locked down: engine key from its Secret, least privilege, NetworkPolicy (pure render)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from llmserve.api import LLMServeSpec
from llmserve.controller.engine_key import security_children
from llmserve.render.engine import render_deployment
from llmserve.render.engine_key import (
    derive_engine_key,
    key_fingerprint,
    master_from_secret,
    master_secret_ref,
    render_engine_key_secret,
)
from llmserve.render.networkpolicy import default_peers, parse_peers, render_network_policy

MASTER = b"m" * 32


def _spec(**extra: Any) -> LLMServeSpec:
    return LLMServeSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **extra})


def _pod(spec: LLMServeSpec) -> dict[str, Any]:
    return render_deployment("llama", "ai", "uid-1", spec)["spec"]["template"]["spec"]


def test_engine_gets_its_key_from_the_llmserves_secret_not_from_the_manifest() -> None:
    container = _pod(_spec())["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llama-engine-key", "key": "api-key"}},
    }
    assert not any("api-key" in arg for arg in container["args"])  # never on the command line


def test_engine_pod_runs_without_privileges_or_api_token() -> None:
    pod = _pod(_spec())
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    # the stock vLLM image runs as root: non-root is only forced on the simulator image
    assert "runAsNonRoot" not in pod["securityContext"]


def test_simulator_image_runs_as_non_root() -> None:
    pod = _pod(_spec(engine={"kind": "simulator"}))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532


def test_engine_keys_differ_per_llmserve_and_per_incarnation() -> None:
    a = derive_engine_key(MASTER, "ai", "llama", "uid-1")
    assert a == derive_engine_key(MASTER, "ai", "llama", "uid-1")
    others = {
        derive_engine_key(MASTER, "ai", "llama", "uid-2"),
        derive_engine_key(MASTER, "other", "llama", "uid-1"),
        derive_engine_key(MASTER, "ai", "qwen", "uid-1"),
        derive_engine_key(b"n" * 32, "ai", "llama", "uid-1"),
    }
    assert a not in others and len(others) == 4
    assert len(a) > 40


def test_key_secret_is_owned_by_the_llmserve_and_labelled() -> None:
    secret = render_engine_key_secret("llama", "ai", "uid-1", "sk-engine-x")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert secret["metadata"]["labels"]["llmserve.dev/engine-key"] == "true"
    assert base64.b64decode(secret["data"]["api-key"]) == b"sk-engine-x"


def test_children_include_key_and_policy_and_roll_pods_on_a_new_key() -> None:
    spec = _spec()
    deployment = render_deployment("llama", "ai", "uid-1", spec)
    children = security_children("sk-engine-x", "llama", "ai", "uid-1", spec, deployment)
    assert [c["kind"] for c in children] == ["Secret", "PodDisruptionBudget", "NetworkPolicy"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["llmserve.dev/engine-key-fingerprint"] == key_fingerprint("sk-engine-x")
    assert "sk-engine-x" not in str(deployment)


def test_network_policy_admits_only_the_given_peers_on_the_engine_port() -> None:
    peers = default_peers("llmserve-system")
    policy = render_network_policy("llama", "ai", "uid-1", _spec(), peers)
    assert policy["spec"]["podSelector"]["matchLabels"]["llmserve.dev/llmserve"] == "llama"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    (peer,) = rule["from"]
    # a pod in the tenant's namespace that merely wears the gateway's labels is not admitted
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "llmserve-system"}}
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["gateway", "operator"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("not json", "not valid JSON"), ('{"podSelector": {}}', "JSON list"), ('[{"ports": []}]', "unknown")],
)
def test_bad_ingress_peer_configuration_names_the_variable(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match="LLMSERVE_ENGINE_INGRESS_FROM") as err:
        parse_peers(raw)
    assert problem in str(err.value)


def test_master_secret_must_hold_enough_bytes() -> None:
    short = {"metadata": {"name": "m"}, "data": {"master-key": base64.b64encode(b"short").decode()}}
    with pytest.raises(ValueError, match="master-key"):
        master_from_secret(short)


def test_master_secret_location() -> None:
    assert str(master_secret_ref("", "llmserve-system")) == "llmserve-system/llmserve-engine-key-master"
    assert str(master_secret_ref("m", "llmserve-system")) == "llmserve-system/m"
    assert str(master_secret_ref("x/y", "llmserve-system")) == "x/y"
    with pytest.raises(ValueError, match="namespace/name"):
        master_secret_ref("/y", "llmserve-system")


def test_a_replica_drains_for_the_llmserves_drain_time_after_leaving_rotation() -> None:
    pod = _pod(_spec())
    container = pod["containers"][0]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 600  # default fits long generations
    sim = _pod(_spec(engine={"kind": "simulator", "drainSeconds": 42}))
    assert sim["terminationGracePeriodSeconds"] == 47
    env = {e["name"]: e.get("value") for e in sim["containers"][0]["env"]}
    assert env["LLMSERVE_SIM_SHUTDOWN_GRACE_SECONDS"] == "42"


def test_voluntary_disruptions_take_one_engine_replica_at_a_time() -> None:
    from llmserve.render.drain import render_pdb

    pdb = render_pdb("llama", "ai", "uid-1", _spec())
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["llmserve.dev/llmserve"] == "llama"
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_drain_seconds_out_of_range_is_refused_naming_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"drain_?[sS]econds"):
        _spec(engine={"drainSeconds": -1})
