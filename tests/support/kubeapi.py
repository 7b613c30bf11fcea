"""Reads Kubernetes objects for the tests over HTTP with the kubeconfig's credentials, not a kubectl per read
(and creates and deletes the tests' namespaces the same way).

Tests poll objects (status, pods, Leases) every fraction of a second while they wait on facts; a kubectl
process per poll cost ~50 ms of CPU on a 2-core machine that also runs the control plane, the operator
and the engines. One keep-alive HTTPS client reads the same JSON (GET of the object or the list).

Only kubeconfigs with a client certificate and key (the local control plane's) are read this way; any
other (a kind cluster, a token, an exec plugin) returns None from `ApiReader.from_kubeconfig`, and the
caller keeps using kubectl. Kinds not in `RESOURCES` also go through kubectl.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

# kubectl's names for a kind (as the tests write them) -> (API group path, plural, namespaced).
_CORE, _APPS, _OURS = "/api/v1", "/apis/apps/v1", "/apis/llmserve.dev/v1alpha1"
RESOURCES: dict[str, tuple[str, str, bool]] = {}
for _names, _where in (
    (("llmserve", "llmserves", "llms"), (_OURS, "llmserves", True)),
    (("burstpool", "burstpools"), (_OURS, "burstpools", False)),
    (("deployment", "deployments", "deploy"), (_APPS, "deployments", True)),
    (("replicaset", "replicasets", "rs"), (_APPS, "replicasets", True)),
    (("pod", "pods", "po"), (_CORE, "pods", True)),
    (("service", "services", "svc"), (_CORE, "services", True)),
    (("secret", "secrets"), (_CORE, "secrets", True)),
    (("node", "nodes", "no"), (_CORE, "nodes", False)),
    (("namespace", "namespaces", "ns"), (_CORE, "namespaces", False)),
    (("networkpolicy", "networkpolicies", "netpol"), ("/apis/networking.k8s.io/v1", "networkpolicies", True)),
    (("lease", "leases"), ("/apis/coordination.k8s.io/v1", "leases", True)),
):
    for _name in _names:
        RESOURCES[_name] = _where


class ApiError(AssertionError):
    """The apiserver answered something other than the object (or a 404)."""


class ApiReader:
    """GETs objects and lists; thread-safe (the load generators poll from threads)."""

    def __init__(self, server: str, ca_file: str, cert_file: str, key_file: str) -> None:
        context = ssl.create_default_context(cafile=ca_file)
        context.load_cert_chain(cert_file, key_file)
        self._client = httpx.Client(base_url=server, verify=context, timeout=30, trust_env=False)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> ApiReader | None:
        """A reader for the current context's cluster, or None when its credentials are not file-based."""
        config = yaml.safe_load(kubeconfig.read_text()) or {}
        context_name = config.get("current-context")
        context = next((c["context"] for c in config.get("contexts", []) if c["name"] == context_name), None)
        if context is None:
            return None
        cluster: dict[str, Any] = next(
            (c["cluster"] for c in config.get("clusters", []) if c["name"] == context["cluster"]), {}
        )
        user: dict[str, Any] = next(
            (u["user"] for u in config.get("users", []) if u["name"] == context["user"]), {}
        )
        needed = (cluster.get("server"), cluster.get("certificate-authority"),
                  user.get("client-certificate"), user.get("client-key"))  # fmt: skip
        if not all(needed):
            return None
        server, ca, cert, key = (str(value) for value in needed)
        return cls(server, ca, cert, key)

    @staticmethod
    def path(kind: str, namespace: str | None, name: str | None = None) -> str | None:
        """The URL path of an object (or of the list when `name` is None); None for unknown kinds."""
        where = RESOURCES.get(kind.lower())
        if where is None:
            return None
        group, plural, namespaced = where
        # kubectl's default namespace when none is given
        scope = f"/namespaces/{quote(namespace or 'default', safe='')}" if namespaced else ""
        return f"{group}{scope}/{plural}" + (f"/{quote(name, safe='')}" if name else "")

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The JSON at `path`, or None on 404."""
        response = self._client.get(path, params=params)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApiError(f"GET {path}: HTTP {response.status_code}: {response.text[:500]}")
        return dict(response.json())

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs `body` to the collection at `path`, as `kubectl create` does; returns the created object.
        A 429 (the apiserver still starting, or shedding load) is retried after its Retry-After, as
        kubectl's client does."""
        for _attempt in range(10):
            response = self._client.post(path, json=body)
            if response.status_code != 429:
                break
            time.sleep(min(float(response.headers.get("Retry-After") or 1), 5))
        if response.status_code != 201:
            raise ApiError(f"POST {path}: HTTP {response.status_code}: {response.text[:500]}")
        return dict(response.json())

    def delete(self, path: str) -> bool:
        """Starts deleting the object at `path` without waiting for it to go (`kubectl delete
        --wait=false`); False when the apiserver refused (already gone counts as done)."""
        try:
            response = self._client.delete(path)
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 202, 404)

    def close(self) -> None:
        self._client.close()
