"""A test-side stand-in for kube-proxy: one Service port, forwarded from loopback to the Service's endpoints.

The dev cluster has no kube-proxy (and no ClusterIPs that route), so a test that wants to reach a
Service the way a client in the cluster does runs this forwarder: `python -m tests.support.service_proxy
--namespace NS --service NAME --port-name http --listen-port N`. It listens on 127.0.0.1 only.

What it copies from kube-proxy (iptables/nftables mode), because a rollout's outcome depends on it:
- it follows the Service's EndpointSlices (label `kubernetes.io/service-name`) by a live watch, as
  kube-proxy does, and applies what it saw in syncs at most once per `--min-sync-seconds` (kube-proxy's
  `--iptables-min-sync-period`, default 1 s): a change lands between at once and a second later, which
  is the window a terminating pod must keep accepting in;
- each *new* connection goes to a random endpoint whose condition `ready` is true (a nil condition
  counts as true, as the API says consumers should); when none is ready it falls back to endpoints that
  are `serving` and `terminating` (ProxyTerminatingEndpoints); when there are none it refuses at once
  (kube-proxy REJECTs), i.e. the client sees the connection closed without an answer;
- a connection already established is never cut when its endpoint leaves the slice (conntrack keeps
  it), so a terminating pod can finish what it serves;
- the slice's port is chosen by the Service port's name, as kube-proxy maps targetPort.
Not copied: ClusterIP/NodePort/LoadBalancer addresses, session affinity, topology-aware routing and
trafficDistribution, traffic policies, UDP/SCTP, dual stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from typing import Any

from llmserve import kube

log = logging.getLogger("service-proxy")
Obj = dict[str, Any]


def _true(conditions: Obj, name: str) -> bool:
    return conditions.get(name) is not False  # nil is "unknown", read as true (discovery.k8s.io/v1)


class Endpoints:
    """The Service's endpoints for one port name, from its EndpointSlices (pure; fed by the watch)."""

    def __init__(self, port_name: str) -> None:
        self.port_name = port_name
        self.slices: dict[str, Obj] = {}

    def replace(self, slices: list[Obj]) -> None:
        self.slices = {s["metadata"]["name"]: s for s in slices}

    def apply(self, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            self.slices.pop(obj["metadata"]["name"], None)
        elif event_type in ("ADDED", "MODIFIED"):
            self.slices[obj["metadata"]["name"]] = obj

    def _all(self) -> list[tuple[str, int, Obj]]:
        found = []
        for slice_ in self.slices.values():
            ports = [p["port"] for p in slice_.get("ports") or [] if p.get("name", "") == self.port_name]
            for endpoint in slice_.get("endpoints") or []:
                for address in endpoint.get("addresses", [])[:1]:
                    for port in ports:
                        found.append((address, int(port), endpoint.get("conditions") or {}))
        return found

    def ready(self) -> list[tuple[str, int]]:
        return sorted({(a, p) for a, p, c in self._all() if _true(c, "ready")})

    def terminating_serving(self) -> list[tuple[str, int]]:
        return sorted(
            {(a, p) for a, p, c in self._all() if c.get("terminating") is True and _true(c, "serving")}
        )

    def choose(self, rng: random.Random) -> tuple[str, int] | None:
        candidates = self.ready() or self.terminating_serving()
        return rng.choice(candidates) if candidates else None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close, as TCP through conntrack would pass it on
    except (ConnectionError, OSError):
        writer.close()


class ServiceProxy:
    def __init__(self, namespace: str, service: str, port_name: str, min_sync_seconds: float) -> None:
        self.namespace, self.service = namespace, service
        self.endpoints = Endpoints(port_name)  # what the watch has seen
        self.synced = Endpoints(port_name)  # what new connections use: the last sync
        self.min_sync_seconds = min_sync_seconds
        self.changed = asyncio.Event()
        self.rng = random.Random()

    async def sync(self) -> None:
        """kube-proxy's rule sync: runs on each change, but at most once per min_sync_seconds."""
        loop = asyncio.get_running_loop()
        last = -self.min_sync_seconds
        while True:
            await self.changed.wait()
            await asyncio.sleep(max(0.0, last + self.min_sync_seconds - loop.time()))
            self.changed.clear()
            self.synced.replace(list(self.endpoints.slices.values()))
            last = loop.time()
            log.info(
                "event=synced ready=%s terminating_serving=%s",
                self.synced.ready(), self.synced.terminating_serving(),
            )  # fmt: skip

    async def watch(self) -> None:
        selector = f"kubernetes.io/service-name={self.service}"
        while True:
            try:
                async for event_type, obj in kube.list_then_watch("EndpointSlice", self.namespace, selector):
                    if event_type == "SYNC":
                        self.endpoints.replace(obj["items"])
                    else:
                        self.endpoints.apply(event_type, obj)
                    self.changed.set()
            except kube.KubeError as err:
                log.warning("event=watch_failed error=%s", err)
                await asyncio.sleep(0.5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self.synced.choose(self.rng)
        if target is None:
            log.warning("event=no_endpoint")
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError as err:
            log.warning("event=connect_failed endpoint=%s:%s error=%s", *target, err)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        for each in (writer, upstream_writer):
            with contextlib.suppress(ConnectionError, OSError):
                each.close()


async def serve(
    namespace: str, service: str, port_name: str, listen_port: int, min_sync_seconds: float
) -> None:
    proxy = ServiceProxy(namespace, service, port_name, min_sync_seconds)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", listen_port)
    log.info("event=listening port=%d service=%s/%s port_name=%s", listen_port, namespace, service, port_name)
    async with server:
        await asyncio.gather(server.serve_forever(), proxy.watch(), proxy.sync())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--port-name", default="http")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--min-sync-seconds", type=float, default=1.0, help="kube-proxy's default: 1 s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(args.namespace, args.service, args.port_name, args.listen_port, args.min_sync_seconds))


if __name__ == "__main__":
    main()
