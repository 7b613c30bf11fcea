"""The gateway's view of rented instances: only serving, non-draining ones, with their key's Secret."""

from llmserve.api.burstpool import BurstPoolStatus, InstanceStatus
from llmserve.burst.backends import serving_backends
from llmserve.controller.burst_store import secret_name


def record(name: str, **fields: object) -> InstanceStatus:
    base: dict[str, object] = {
        "name": name,
        "owner": "ai/llama",
        "slot": 0,
        "phase": "Running",
        "created": "2026-11-30T12:00:00Z",
    }
    return InstanceStatus.model_validate(base | fields)


def test_only_ready_instances_not_draining_are_backends() -> None:
    status = BurstPoolStatus(
        instances=[
            record("a", id="1", endpoint="https://1-8000.proxy", readySince="2026-11-30T12:03:00Z"),
            record(
                "b",
                id="2",
                endpoint="https://2-8000.proxy",
                readySince="2026-11-30T12:03:00Z",
                drainingSince="2026-11-30T12:09:00Z",
            ),
            record("c", id="3", endpoint="https://3-8000.proxy"),  # not serving yet
            record("d", phase="Requested"),  # create unconfirmed
        ]
    )
    backends = serving_backends([status])
    assert [b.instance for b in backends["ai/llama"]] == ["a"]
    assert backends["ai/llama"][0].key_secret == secret_name("a")
