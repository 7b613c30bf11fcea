"""How pods on fake nodes reach the API server: a relay inside each node's namespace, and a token per pod.

The API server listens on the host's loopback, which a node's network namespace cannot see. In a real
cluster pods reach it through the `kubernetes` Service; here the fake kubelet opens a listening socket
*inside* the node's namespace on 127.0.0.1:API_RELAY_PORT (an address the server certificate names)
and relays each connection to the API server's own address from the host side: bytes only, TLS end to
end. A pod then gets what a kubelet mounts for it — a service-account token from the TokenRequest API,
bound to the pod — as a kubeconfig file named by $KUBECONFIG, so it acts with its ServiceAccount's RBAC
(the chart's Roles), not as an admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from llmserve import kube

log = logging.getLogger("fake-kubelet")

Obj = dict[str, Any]
API_RELAY_PORT = 6443
TOKEN_SECONDS = 3600
_CLONE_NEWNET = 0x40000000


def listen_in_namespace(namespace: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket inside network namespace `namespace` (this thread returns to its own).
    Python 3.11 has no os.setns, hence libc."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/ns/net") as home, open(f"/var/run/netns/{namespace}") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host namespace failed")
    return sock


def admin_cluster() -> tuple[str, int, str]:
    """The API server's host, port and CA file, from the kubelet's own kubeconfig."""
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    cluster = config["clusters"][0]["cluster"]
    server = urlparse(cluster["server"])
    return server.hostname or "127.0.0.1", server.port or 443, cluster["certificate-authority"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def serve_api_relay(namespace: str) -> asyncio.Server:
    """Relays 127.0.0.1:API_RELAY_PORT inside `namespace` to the API server."""
    host, port, _ = admin_cluster()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    sock = listen_in_namespace(namespace, "127.0.0.1", API_RELAY_PORT)
    return await asyncio.start_server(relay, sock=sock)


async def pod_kubeconfig(pod: Obj, directory: Path) -> Path | None:
    """A kubeconfig with a token for the pod's ServiceAccount, or None when the pod asks for none
    (`automountServiceAccountToken: false`)."""
    spec, meta = pod["spec"], pod["metadata"]
    if spec.get("automountServiceAccountToken") is False:
        return None
    account = spec.get("serviceAccountName") or "default"
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        },
    }
    answer = await kube.request("POST", "ServiceAccount", meta["namespace"], account, "token", json=request)
    _, _, ca_file = admin_cluster()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": f"https://127.0.0.1:{API_RELAY_PORT}", "certificate-authority": ca_file}}],
        "users": [{"name": account, "user": {"token": answer["status"]["token"]}}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster", "user": account, "namespace": meta["namespace"]}}],
        "current-context": "in-cluster",
    }  # fmt: skip
    return await asyncio.to_thread(_write_private, directory / "kubeconfig", yaml.safe_dump(config))


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    return path
