"""Responses API ids that lead back to the replica holding the response, for any gateway replica (pure).

vLLM keeps stored responses (and the conversation behind `previous_response_id`) in one replica's
memory, and takes the response id from the request's `request_id` field. So the gateway chooses the id
itself: `resp_` + a 16-hex tag + 32 random hex digits, where the tag is a digest of the key's name, the
model and the replica's URL. Any gateway replica can then find the holder among the model's current
backends without shared state, an id only leads back for keys of the same name (a rotated key keeps its
responses), and no address appears in the id. A client's own `request_id` is replaced, so no caller
can overwrite another's stored response by choosing its id.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

from llmserve.gateway.auth import ApiKey
from llmserve.gateway.registry import Backend, ModelRoute

PREFIX = "resp_"
TAG_HEX = 16
_RANDOM_HEX = 32
_ID = re.compile(rf"^{PREFIX}(?P<tag>[0-9a-f]{{{TAG_HEX}}})[0-9a-f]{{{_RANDOM_HEX}}}$")


def tag_of(key_name: str, model: str, backend_url: str) -> str:
    material = "\n".join((key_name, model, backend_url.rstrip("/"))).encode()
    return hashlib.sha256(material).hexdigest()[:TAG_HEX]


def mint(key_name: str, model: str, backend_url: str) -> str:
    """A fresh response id that leads back to `backend_url` for this key name and model."""
    return PREFIX + tag_of(key_name, model, backend_url) + secrets.token_hex(_RANDOM_HEX // 2)


def tag_in(response_id: str) -> str | None:
    """The routing tag of an id the gateway minted, or None for any other string."""
    match = _ID.match(response_id)
    return match.group("tag") if match else None


def holder(
    response_id: str, key: ApiKey, routes: Mapping[str, ModelRoute], model: str | None = None
) -> tuple[str, Backend] | None:
    """(model, replica) holding the response, among models the key may use (or only `model`);
    None when the id is not the gateway's, belongs to another key, or its replica is gone."""
    tag = tag_in(response_id)
    if tag is None:
        return None
    names = [model] if model is not None else sorted(routes)
    for name in names:
        route = routes.get(name)
        if route is None or not key.allows(name):
            continue
        for backend in route.backends:
            if tag_of(key.name, name, backend.url) == tag:
                return name, backend
    return None
