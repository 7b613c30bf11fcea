"""A deleted child the API server refuses to take back (a quota, an admission policy) is applied again with
backoff until it stands, the conditions saying so meanwhile; a namespace's teardown is not such a refusal
and leaves no error in the operator's log; an invalid spec with no replica says InvalidSpec, not
ScaledToZero (real control plane, real quota controller and ValidatingAdmissionPolicy)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for
from tests.support.manifests import llmserve, wait_ready

pytestmark = pytest.mark.cluster

SELECTOR = "llmserve.dev/llmserve"


def conditions(cluster: ClusterHandle, namespace: str) -> dict[str, dict[str, Any]]:
    obj = cluster.get("llmserve", "llama", namespace)
    return {type_: condition(obj, type_) for type_ in ("Ready", "Progressing", "Degraded")}


def events(cluster: ClusterHandle, namespace: str, reason: str) -> list[dict[str, Any]]:
    found = cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                            f"involvedObject.kind=LLMServe,reason={reason}").stdout  # fmt: skip
    return list(json.loads(found)["items"])


def log_since(operator: OperatorProcess, offset: int) -> str:
    with open(operator.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


@contextmanager
def admission_policy(
    cluster: ClusterHandle, name: str, namespace: str, rule: dict[str, Any]
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy denying `rule` (resourceRules entry) in `namespace` only, removed after."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [rule]},
                 "validations": [{"expression": "false", "message": f"refused by the test's policy {name}"}]},
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    }  # fmt: skip
    try:
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))  # fmt: skip
        yield
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)


def refused_by_policy(result: Any, name: str) -> bool:
    return bool(result.returncode != 0 and f"refused by the test's policy {name}" in result.stderr)


def test_a_deleted_deployment_refused_by_a_quota_comes_back_once_the_quota_goes(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve("llama", autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    original = cluster.get("deployment", "llama", namespace) or {}
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-deployments"},
             "spec": {"hard": {"count/deployments.apps": "0"}}}  # fmt: skip
    cluster.apply(quota, namespace)
    # The quota controller has counted the Deployment: from now on a new one is refused as over quota.
    wait_for(lambda: ((cluster.kubectl("get", "resourcequota", "no-deployments", "-n", namespace, "-o", "json").stdout
                       and json.loads(cluster.kubectl("get", "resourcequota", "no-deployments", "-n", namespace, "-o", "json").stdout))
                      .get("status", {}).get("used", {}).get("count/deployments.apps") == "1"),
             timeout=30, message="the quota's usage counted")  # fmt: skip

    cluster.kubectl("delete", "deployment/llama", "-n", namespace, "--wait=false")
    # Refused again and again (the second refusal proves the retry), and the conditions say so.
    retrying = wait_for(
        lambda: (c := conditions(cluster, namespace)) and "failed 2 time(s)" in c["Progressing"].get("message", "") and c,
        timeout=60, message="Progressing=True RestoreRetrying after a second refusal",
    )  # fmt: skip
    progressing, ready, degraded = retrying["Progressing"], retrying["Ready"], retrying["Degraded"]
    assert (progressing["status"], progressing["reason"]) == ("True", "RestoreRetrying")
    assert progressing["message"].startswith(
        "applying Deployment llama again failed 2 time(s), next try in 2 s:"
    )
    assert "exceeded quota: no-deployments" in progressing["message"]
    assert (ready["status"], ready["reason"]) == ("False", "DeploymentMissing")
    assert progressing["message"] in ready["message"]
    assert (degraded["status"], degraded["reason"]) == ("True", "RestoreFailed")
    refused = wait_for(lambda: events(cluster, namespace, "RestoreFailed"), timeout=30,
                       message="a RestoreFailed Event")  # fmt: skip
    assert refused[0]["type"] == "Warning"
    assert "exceeded quota: no-deployments" in refused[0]["message"]
    assert cluster.get("deployment", "llama", namespace) is None

    cluster.kubectl("delete", "resourcequota", "no-deployments", "-n", namespace)
    restored = wait_for(lambda: cluster.get("deployment", "llama", namespace), timeout=90,
                        message="the Deployment applied again once the quota is gone")  # fmt: skip
    assert restored["metadata"]["uid"] != original["metadata"]["uid"]
    back = wait_ready(cluster, namespace, "llama", 1, timeout=90)
    assert condition(back, "Ready")["reason"] == "Available"
    wait_for(lambda: (c := conditions(cluster, namespace))["Progressing"].get("reason") == "Stable"
             and c["Degraded"].get("reason") == "AsExpected", timeout=30,
             message="Progressing Stable and Degraded AsExpected again")  # fmt: skip
    recreated = wait_for(lambda: events(cluster, namespace, "DeploymentRecreated"), timeout=30,
                         message="a DeploymentRecreated Event")  # fmt: skip
    assert re.fullmatch(r"applied Deployment llama again after its deletion after \d+ failed attempt\(s\)",
                        recreated[0]["message"]), recreated[0]["message"]  # fmt: skip
    log = operator_process.log_path.read_text(errors="replace")
    assert f"event=child_deleted namespace={namespace} llmserve=llama kind=Deployment outcome=retrying" in log
    assert re.search(rf"event=child_restore_retried namespace={namespace} llmserve=llama kind=Deployment "
                     r"failed_attempts=\d+ outcome=applied", log)  # fmt: skip


def test_a_deleted_service_refused_by_an_admission_policy_comes_back_once_the_policy_goes(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    cluster.apply(llmserve("llama", autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    original = cluster.get("service", "llama", namespace) or {}
    name = f"{namespace}-no-services"
    rule = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["services"]}
    with admission_policy(cluster, name, namespace, rule):
        # The policy is in force once the API server refuses a Service (a dry run creates nothing).
        probe = ("create", "service", "clusterip", "probe", "--tcp=80", "-n", namespace, "--dry-run=server")
        wait_for(lambda: refused_by_policy(cluster.kubectl(*probe, check=False), name), timeout=30,
                 message="the admission policy in force")  # fmt: skip
        cluster.kubectl("delete", "service/llama", "-n", namespace, "--wait=false")
        retrying = wait_for(
            lambda: (c := conditions(cluster, namespace)) and "failed 2 time(s)" in c["Progressing"].get("message", "") and c,
            timeout=60, message="Progressing=True RestoreRetrying after a second refusal",
        )  # fmt: skip
        progressing, ready = retrying["Progressing"], retrying["Ready"]
        assert (progressing["status"], progressing["reason"]) == ("True", "RestoreRetrying")
        assert progressing["message"].startswith("applying Service llama again failed 2 time(s)")
        assert f"refused by the test's policy {name}" in progressing["message"]
        # The replica is ready, but no request reaches it without its Service.
        assert (ready["status"], ready["reason"]) == ("False", "ServiceMissing")
        assert ready["message"].startswith("1/1 replicas ready, but Service llama does not exist")
        assert cluster.get("service", "llama", namespace) is None
    restored = wait_for(lambda: cluster.get("service", "llama", namespace), timeout=90,
                        message="the Service applied again once the policy is gone")  # fmt: skip
    assert restored["metadata"]["uid"] != original["metadata"]["uid"]
    assert restored["spec"]["selector"] == original["spec"]["selector"]
    back = wait_ready(cluster, namespace, "llama", 1)
    assert condition(back, "Ready")["reason"] == "Available"
    wait_for(lambda: conditions(cluster, namespace)["Progressing"].get("reason") == "Stable", timeout=30,
             message="Progressing Stable again")  # fmt: skip
    recreated = wait_for(lambda: events(cluster, namespace, "ServiceRecreated"), timeout=30,
                         message="a ServiceRecreated Event")  # fmt: skip
    assert "after its deletion after" in recreated[0]["message"]


def test_deleting_a_namespace_whose_children_go_before_their_llmserve_logs_no_error(
    cluster: ClusterHandle, operator_process: OperatorProcess
) -> None:
    # The namespace's own (the fixture's namespace is deleted at teardown, which this test is about).
    namespace = cluster.create_namespace("teardown")
    cluster.apply(llmserve("llama", autoscaling={"enabled": False}), namespace)
    wait_ready(cluster, namespace, "llama", 1)
    name = f"{namespace}-keep-llmserves"
    rule = {"apiGroups": ["llmserve.dev"], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["llmserves"]}  # fmt: skip
    offset = operator_process.log_path.stat().st_size
    with admission_policy(cluster, name, namespace, rule):
        # The LLMServe cannot be deleted while the policy stands, so its children go first: the order that
        # makes the operator try to restore children in a namespace being deleted.
        probe = ("delete", "llmserve", "llama", "-n", namespace, "--dry-run=server")
        wait_for(lambda: refused_by_policy(cluster.kubectl(*probe, check=False), name), timeout=30,
                 message="the admission policy in force")  # fmt: skip
        cluster.delete_namespace(namespace)
        # The namespace controller deletes them too, in an order of its own: deleted here, they go first.
        wait_for(lambda: (cluster.get("namespace", namespace) or {}).get("status", {}).get("phase") == "Terminating",
                 timeout=30, message="the namespace Terminating")  # fmt: skip
        cluster.kubectl("delete", "deployment/llama", "service/llama", "-n", namespace, "--wait=false",
                        "--ignore-not-found")  # fmt: skip
        skipped = [f"event=child_deleted namespace={namespace} llmserve=llama kind={kind} outcome=namespace_terminating"
                   for kind in ("Deployment", "Service")]  # fmt: skip
        wait_for(lambda: all(line in log_since(operator_process, offset) for line in skipped), timeout=60,
                 message="both restores skipped as namespace_terminating")  # fmt: skip
        # A spec change meanwhile (an update, allowed there) cannot apply the children: skipped, not failed.
        cluster.kubectl("scale", "llms/llama", "-n", namespace, "--replicas=2")
        skipped_apply = (
            f"event=apply_skipped namespace={namespace} llmserve=llama reason=namespace_terminating"
        )
        wait_for(lambda: skipped_apply in log_since(operator_process, offset), timeout=30,
                 message="the spec change's apply skipped")  # fmt: skip
        # Status still follows (an update, allowed there); its ReadyChanged Event is not posted.
        wait_for(lambda: conditions(cluster, namespace)["Ready"].get("reason") == "DeploymentMissing", timeout=30,
                 message="Ready=False DeploymentMissing in the terminating namespace")  # fmt: skip
    wait_for(lambda: cluster.get("namespace", namespace) is None, timeout=120, message="the namespace gone")
    log = log_since(operator_process, offset)
    errors = [line for line in log.splitlines() if "level=ERROR" in line and namespace in line]
    assert errors == []
    assert "Traceback" not in log
    assert not re.search(rf"namespace={namespace} llmserve=llama kind=\w+ outcome=(retrying|applied)", log)
    assert f"namespace {namespace} because it is being terminated" not in log


def test_an_invalid_spec_the_schema_accepts_is_not_ready_as_invalid_spec_not_scaled_to_zero(
    cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str
) -> None:
    # The CRD's CEL (RE2) reads `$` as the end of the text; the operator's own check (Python) also as the end
    # before a final newline: this mount path passes the API server and is refused by the operator.
    cache = {"claimName": "weights", "mountPath": "/dev/shm\n"}
    result = cluster.apply(llmserve("llama", minReplicas=0, replicas=0, modelCache=cache), namespace)
    assert result.returncode == 0
    ready = wait_for(lambda: (c := conditions(cluster, namespace)["Ready"]).get("reason") == "InvalidSpec" and c,
                     timeout=30, message="Ready=False InvalidSpec")  # fmt: skip
    assert ready["status"] == "False"
    assert ready["message"].startswith(
        "spec.modelCache.mountPath: modelCache.mountPath must not be /, /dev, or /dev/shm"
    )
    obj = cluster.get("llmserve", "llama", namespace) or {}
    assert (obj["status"]["replicas"], obj["status"]["desiredReplicas"]) == (0, 0)
    assert cluster.list("deployments", namespace, SELECTOR) == []
    warned = wait_for(
        lambda: events(cluster, namespace, "InvalidSpec"), timeout=30, message="an InvalidSpec Event"
    )
    assert warned[0]["message"] == ready["message"]
