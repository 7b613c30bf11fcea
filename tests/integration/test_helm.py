"""The Helm chart, with the real helm binary: it lints, renders, installs, and its RBAC is enough."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openai import APIConnectionError, NotFoundError, OpenAI

from hack.devcluster.processes import free_port
from tests.support.cluster import TEST_LEASE_ENV, ClusterHandle, OperatorProcess, wait_for
from tests.support.helm import build_helm
from tests.support.manifests import llmserve, wait_ready

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmserve"
RBAC_MODEL = "helm-rbac-llama"  # the served name of the chart-RBAC test's model


@pytest.fixture(scope="module")
def helm() -> str:
    return build_helm()


def test_chart_lints_and_renders_the_operator_with_least_privilege(helm: str) -> None:
    subprocess.run([helm, "lint", "--strict", str(CHART)], check=True, capture_output=True)
    rendered = subprocess.run(
        [helm, "template", "demo", str(CHART), "-n", "llmserve-system", "--include-crds",
         "--set", "operator.watchNamespaces={ai,ml}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(rendered) if d}
    assert "CustomResourceDefinition/llmserves.llmserve.dev" in docs
    operator = docs["Deployment/demo-llmserve-operator"]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["llmserve", "operator"]
    assert "--namespace=ai" in container["args"] and "--namespace=ml" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    rules = docs["ClusterRole/demo-llmserve-operator"]["rules"]
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)
    # Engine-key Secrets are written blind (server-side apply), never read or listed cluster-wide.
    assert [sorted(r["verbs"]) for r in rules if "secrets" in r["resources"]] == [["create", "patch"]]
    master = docs["Role/demo-llmserve-gateway-engine-key"]["rules"]
    assert master == [{"apiGroups": [""], "resources": ["secrets"],
                       "resourceNames": ["demo-llmserve-engine-key-master"], "verbs": ["get", "list", "watch"]}]  # fmt: skip
    gateway = docs["Deployment/demo-llmserve-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert "--engine-key-secret=llmserve-system/demo-llmserve-engine-key-master" in gateway["args"]
    # /metrics has its own Service; the API Service exposes only the API port
    assert [p["name"] for p in docs["Service/demo-llmserve-gateway"]["spec"]["ports"]] == ["http"]
    assert [p["name"] for p in docs["Service/demo-llmserve-gateway-metrics"]["spec"]["ports"]] == ["metrics"]
    # rollouts: grace covers the shutdown delay plus the longest generation, and a PDB keeps one up
    gateway_pod = docs["Deployment/demo-llmserve-gateway"]["spec"]["template"]["spec"]
    assert gateway_pod["terminationGracePeriodSeconds"] == 10 + 600 + 5
    assert {"--shutdown-delay=10", "--drain-timeout=600"} <= set(gateway["args"])
    assert docs["PodDisruptionBudget/demo-llmserve-gateway"]["spec"]["minAvailable"] == 1
    operator_env = {e["name"]: e for e in container["env"]}
    peers = json.loads(operator_env["LLMSERVE_ENGINE_INGRESS_FROM"]["value"])
    assert peers[0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "llmserve-system"}
    }
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"


def test_named_api_key_secrets_narrow_the_gateways_secret_access_to_them(helm: str) -> None:
    rendered = subprocess.run(
        [helm, "template", "demo", str(CHART), "-n", "llmserve-system",
         "--set", "gateway.apiKeySecretNames={team-a,team-b}", "--set", "gateway.watchNamespaces={ai}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    docs = {f"{d['kind']}/{d['metadata']['name']}/{d['metadata'].get('namespace')}": d
            for d in yaml.safe_load_all(rendered) if d}  # fmt: skip
    (rule,) = docs["Role/demo-llmserve-gateway-keys/llmserve-system"]["rules"]
    assert rule["resourceNames"] == ["team-a", "team-b"]
    args = docs["Deployment/demo-llmserve-gateway/llmserve-system"]["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert {"--key-secret=team-a", "--key-secret=team-b"} <= set(args)
    # served namespaces only: bound there, not cluster-wide
    assert "RoleBinding/demo-llmserve-gateway/ai" in docs
    assert not any(key.startswith("ClusterRoleBinding/demo-llmserve-gateway/") for key in docs)


def _render(helm: str, release: str, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [helm, "template", release, str(CHART), "-n", "llmserve-system"]
    for value in sets:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True)


def test_the_operator_runs_two_replicas_that_elect_a_leader_through_a_lease(helm: str) -> None:
    rendered = _render(helm, "llmserve")
    assert rendered.returncode == 0, rendered.stderr
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(rendered.stdout) if d}
    # The README's `helm install llmserve ...` names objects llmserve-*, not llmserve-llmserve-*.
    assert not [name for name in docs if "llmserve-llmserve" in name], list(docs)
    operator = docs["Deployment/llmserve-operator"]
    assert operator["spec"]["replicas"] == 2
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["LLMSERVE_LEASE_NAME"]["value"] == "llmserve-operator"
    role = docs["Role/llmserve-operator-leader-election"]
    assert {"get", "update"} <= {v for r in role["rules"] for v in r["verbs"]}
    assert all(r["resources"] == ["leases"] for r in role["rules"])
    assert docs["PodDisruptionBudget/llmserve-operator"]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("operator.replicas=-1", "/operator/replicas"),
        ("gateway.port=70000", "/gateway/port"),
        ("operator.logLevel=loud", "/operator/logLevel"),
        ("operator.replicaz=2", "replicaz"),
        ("operator.watchNamespaces={Not_A_Namespace}", "/operator/watchNamespaces/0"),
    ],
)
def test_nonsense_values_are_refused_before_anything_is_installed_naming_the_value(
    helm: str, value: str, field: str
) -> None:
    rendered = _render(helm, "demo", value)
    assert rendered.returncode != 0, rendered.stdout[:500]
    assert "values don't meet the specifications of the schema" in rendered.stderr, rendered.stderr
    assert field in rendered.stderr, rendered.stderr


@pytest.mark.cluster
def test_operator_serves_a_model_with_only_the_charts_rbac(
    helm: str, cluster: ClusterHandle, operator_process: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    release_ns = f"{namespace}-system"
    # replicas=0: the chart's operator pod cannot run here (no image registry); its RBAC is installed for
    # real and the operator process below authenticates as the chart's ServiceAccount.
    subprocess.run(
        [helm, "install", "rbac", str(CHART), "-n", release_ns, "--create-namespace", "--skip-crds",
         "--set", "operator.replicas=0", "--wait=false"],
        check=True, capture_output=True, env=cluster.env,
    )  # fmt: skip
    try:
        token = cluster.kubectl("create", "token", "rbac-llmserve-operator", "-n", release_ns).stdout.strip()
        kubeconfig = _token_kubeconfig(cluster, token, tmp_path)
        operator_process.stop()  # only one operator may own the objects at a time
        # POD_NAMESPACE and the Lease name as the chart's Deployment sets them (leader election's Role).
        env = {**cluster.env, "KUBECONFIG": str(kubeconfig), "LLMSERVE_LIVENESS_ADDR": "127.0.0.1",
               "LLMSERVE_METRICS_ADDR": "127.0.0.1", "POD_NAMESPACE": release_ns, "LLMSERVE_OPERATOR_NAMESPACE": release_ns,
               "LLMSERVE_ENGINE_KEY_SECRET": f"{release_ns}/rbac-llmserve-engine-key-master",
               "LLMSERVE_LEASE_NAME": "rbac-llmserve-operator", **TEST_LEASE_ENV}  # fmt: skip
        log_path = tmp_path / "operator.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "llmserve.cli", "operator", "--liveness-port", str(free_port()),
                 "--metrics-port", str(free_port())],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            # A served name of its own: this gateway watches every namespace, and earlier tests' models
            # (namespaces still being deleted) hold "llama-8b" longer than this test waits.
            cluster.apply(llmserve(model={"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": RBAC_MODEL}),
                          namespace)  # fmt: skip
            wait_ready(cluster, namespace, "llama", 1)
            _assert_gateway_serves_with_chart_rbac(cluster, release_ns, tmp_path)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        log_text = log_path.read_text()
        # An RBAC denial reads: ... is forbidden: User "system:serviceaccount:<ns>:<sa>" cannot <verb> ...
        assert "system:serviceaccount" not in log_text, log_text[-3000:]
    finally:
        subprocess.run([helm, "uninstall", "rbac", "-n", release_ns], capture_output=True, env=cluster.env)
        operator_process.start()


def _assert_gateway_serves_with_chart_rbac(cluster: ClusterHandle, release_ns: str, tmp_path: Path) -> None:
    """The gateway, as the chart's gateway ServiceAccount, discovers the model and serves a keyed request."""
    api_key = "sk-helm-rbac-test-0123456789"
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "team-a", "labels": {"llmserve.dev/api-key": "true"}},
              "stringData": {"key": api_key, "name": "team-a"}}  # fmt: skip
    cluster.apply(secret, release_ns)
    token = cluster.kubectl("create", "token", "rbac-llmserve-gateway", "-n", release_ns).stdout.strip()
    gateway_dir = tmp_path / "gateway"
    gateway_dir.mkdir()
    env = {**cluster.env, "KUBECONFIG": str(_token_kubeconfig(cluster, token, gateway_dir))}
    port = free_port()
    log_path = gateway_dir / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmserve.cli", "gateway", "--port", str(port), "--keys-namespace", release_ns,
             "--metrics-port", str(free_port()),
             "--engine-key-secret", f"{release_ns}/rbac-llmserve-engine-key-master"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key, max_retries=0, timeout=10)

        def answered() -> bool:
            try:
                reply = client.chat.completions.create(
                    model=RBAC_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
                )
            except (APIConnectionError, NotFoundError):
                return False  # not listening yet, or the model not discovered yet
            return reply.usage is not None and reply.usage.completion_tokens == 3

        wait_for(answered, timeout=60, interval=0.5, message="a completion through the gateway")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert "system:serviceaccount" not in log_path.read_text(), log_path.read_text()[-3000:]


def _token_kubeconfig(cluster: ClusterHandle, token: str, tmp_path: Path) -> Path:
    config = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    cluster_entry = config["clusters"][0]["cluster"]
    ca = (
        cluster_entry.get("certificate-authority-data")
        or base64.b64encode(Path(cluster_entry["certificate-authority"]).read_bytes()).decode()
    )
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cluster_entry["server"], "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))  # fmt: skip
    os.chmod(path, 0o600)
    return path


def test_reading_hf_token_secrets_for_rented_engines_is_granted_only_when_asked(helm: str) -> None:
    def secret_verbs(*sets: str) -> list[list[str]]:
        rendered = _render(helm, "demo", *sets)
        assert rendered.returncode == 0, rendered.stderr
        role = next(d for d in yaml.safe_load_all(rendered.stdout)
                    if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "demo-llmserve-operator")  # fmt: skip
        return [sorted(r["verbs"]) for r in role["rules"] if "secrets" in r["resources"]]

    assert secret_verbs() == [["create", "patch"]]
    assert secret_verbs("burst.readHfTokenSecrets=true") == [["create", "patch"], ["get"]]
    refused = _render(helm, "demo", "burst.readHfTokenSecrets=yes please")
    assert refused.returncode != 0 and "readHfTokenSecrets" in refused.stderr
