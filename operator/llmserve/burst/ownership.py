"""What every provider client shares about the instances it rents: which are ours, and that
terminating one the provider no longer knows is done, not an error."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from llmserve.burst.types import ErrorKind, Instance, ProviderError, owned_by

log = logging.getLogger(__name__)


def owned_instances(instances: Iterable[Instance], cluster_id: str) -> list[Instance]:
    """Instances with this cluster's name prefix AND its env marker (a name alone could be a copy)."""
    return [i for i in instances if owned_by(i.name, cluster_id) and i.cluster_id == cluster_id]


async def terminate_once(provider: str, instance_id: str, delete: Callable[[], Awaitable[object]]) -> None:
    """Runs the provider's DELETE; a NOT_FOUND answer means the instance is already gone (and billing
    with it), so a retried terminate after a lost answer succeeds instead of failing for ever."""
    try:
        await delete()
    except ProviderError as error:
        if error.kind is ErrorKind.NOT_FOUND:
            log.info("event=instance_already_gone provider=%s id=%s", provider, instance_id)
            return
        raise
    log.info("event=instance_terminated provider=%s id=%s", provider, instance_id)
