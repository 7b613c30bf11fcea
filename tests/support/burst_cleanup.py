"""Teardown for burst tests: every BurstPool and bursting LLMServe goes, even when the test failed.

Both carry finalizers that only a burst-enabled operator can finish (it terminates the rented instances
first). A test that fails halfway must not leave them behind: a pool stuck in deletion is seen by the next
test's operator (which then reads its credentials Secret, or counts its instances' burn as the account's).
So the burst operator is given `timeout_seconds` to finish them the normal way; whatever is still there
after that has its finalizers stripped (nothing can finish them any more) and the teardown fails loudly.
"""

from __future__ import annotations

import json
import time

from tests.support.cluster import ClusterHandle


def _names(cluster: ClusterHandle, *args: str) -> list[str]:
    result = cluster.kubectl("get", *args, "-o", "name", check=False)
    return [line for line in result.stdout.split() if line] if result.returncode == 0 else []


def remove_burst_objects(cluster: ClusterHandle, namespaces: list[str], timeout_seconds: float = 90) -> None:
    """Deletes the LLMServes in `namespaces` and every BurstPool; waits for the operator to finish them.

    Raises AssertionError naming what the operator did not finish in time (after stripping its
    finalizers, so the failure stays in the test that caused it)."""
    for namespace in namespaces:
        cluster.kubectl("delete", "llmserves", "--all", "-n", namespace, "--wait=false", check=False)
    cluster.kubectl("delete", "burstpools", "--all", "--wait=false", check=False)

    def left() -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = [
            (n, ns) for ns in namespaces for n in _names(cluster, "llmserves", "-n", ns)
        ]
        return found + [(n, None) for n in _names(cluster, "burstpools")]

    deadline = time.monotonic() + timeout_seconds
    while (remaining := left()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not remaining:
        return
    unfinalize = json.dumps({"metadata": {"finalizers": None}})
    for name, namespace in remaining:
        where = ["-n", namespace] if namespace else []
        cluster.kubectl("patch", name, *where, "--type=merge", "-p", unfinalize, check=False)
    raise AssertionError(f"not deleted within {timeout_seconds:.0f}s (finalizers stripped): {remaining}")
