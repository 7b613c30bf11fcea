"""One network namespace per fake node, with a routed pod CIDR, so pod IPs are real, non-loopback addresses.

Layout for node N (prefix P, base 10.244):  host veth `P-hN` 10.244.N.254/24  <->  netns `P-nN` eth0
10.244.N.1/24; each pod adds its own 10.244.N.K/24 address on eth0. The host reaches pods through the
connected route. Pods reach pods on other nodes as through a CNI: each namespace routes every other
node's /24 (and only those) via the host, which forwards between the fake nodes' host links only
(forwarding is switched on for those links, not host-wide); nothing is routed anywhere else.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class NodeNetwork:
    prefix: str
    index: int
    cidr_base: str  # e.g. "10.244"
    _next_host: int = 10
    _free: list[int] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"{self.prefix}-n{self.index}"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}-h{self.index}"[:15]

    @property
    def subnet(self) -> str:
        return f"{self.cidr_base}.{self.index}"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.254"

    def create(self) -> None:
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "eth0", "netns", self.namespace)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.subnet}.1/24", "dev", "eth0")
        _ip("-n", self.namespace, "link", "set", "eth0", "up")
        with open(f"/proc/sys/net/ipv4/conf/{self.host_link}/forwarding", "w") as forwarding:
            forwarding.write("1")  # packets from this node to another node's pods, on this link only

    def route_to(self, other: NodeNetwork) -> None:
        """Pod-to-pod traffic to `other`'s pod CIDR goes through the host."""
        _ip("-n", self.namespace, "route", "add", f"{other.subnet}.0/24", "via", self.host_ip)

    def allocate_pod_ip(self) -> str:
        host = self._free.pop(0) if self._free else self._next_host
        if host == self._next_host:
            self._next_host += 1
        if host >= 250:
            raise RuntimeError(f"pod CIDR {self.subnet}.0/24 is full")
        address = f"{self.subnet}.{host}"
        _ip("-n", self.namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        return address

    def release_pod_ip(self, address: str) -> None:
        _ip("-n", self.namespace, "addr", "del", f"{address}/24", "dev", "eth0", check=False)
        self._free.append(int(address.rsplit(".", 1)[1]))

    def set_connected(self, connected: bool) -> None:
        """Cuts the node off (or reconnects it) like a failed NIC, for fault tests."""
        _ip("link", "set", self.host_link, "up" if connected else "down")

    def destroy(self) -> None:
        """Kills whatever still runs inside the namespace (engine processes), then removes it."""
        kill_namespace_processes(self.namespace)
        _ip("link", "del", self.host_link, check=False)
        _ip("netns", "del", self.namespace, check=False)


def kill_namespace_processes(namespace: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], check=False)


def remove_leftovers(prefix: str) -> None:
    """Deletes namespaces and links that a crashed run with this prefix left behind."""
    listing = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listing:
        name = line.split(" ")[0]
        if name.startswith(f"{prefix}-n"):
            kill_namespace_processes(name)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.split("\n"):
        parts = line.split(": ")
        if len(parts) > 1:
            link = parts[1].split("@")[0]
            if link.startswith(f"{prefix}-h"):
                _ip("link", "del", link, check=False)
