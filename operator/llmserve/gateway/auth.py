"""API keys: parsed from labelled Secrets or a file, held only as sha256 digests, checked in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

KEY_LABEL = "llmserve.dev/api-key"  # Secrets carrying this label are gateway API keys
MIN_KEY_LENGTH = 16
ALL_MODELS = "*"


@dataclass(frozen=True)
class ApiKey:
    """One caller's key: who they are (name, used in metrics and logs), what they may use, how fast."""

    name: str
    digest: bytes  # sha256 of the key; the key itself is never kept
    models: frozenset[str] | None = None  # None: every model
    requests_per_minute: int = 0  # 0: unlimited
    tokens_per_minute: int = 0  # 0: unlimited

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


ANONYMOUS = ApiKey(name="anonymous", digest=b"")


def auth_required(insecure_no_auth: bool, key_count: int, loopback_only: bool) -> bool:
    """Keys are checked whenever any exist or the port is reachable beyond loopback; only an explicit
    --insecure-no-auth turns that off."""
    if insecure_no_auth:
        return False
    return key_count > 0 or not loopback_only


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _limit(fields: Mapping[str, str], field: str, where: str) -> int:
    raw = fields.get(field, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{where}: {field} must be a whole number (0 for no limit), got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{where}: {field} must be 0 (no limit) or more, got {value}")
    return value


def parse_key(fields: Mapping[str, str], default_name: str, where: str) -> ApiKey:
    """Builds an ApiKey from string fields (a Secret's decoded data or an entry of the static file).

    Fields: `key` (the bearer token) or `keySha256` (its hex sha256), optional `name`, `models`
    (comma-separated served names, `*` for all), `requestsPerMinute`, `tokensPerMinute`.
    Errors name the field and never echo the key.
    """
    plain, hashed = fields.get("key", "").strip(), fields.get("keySha256", "").strip().lower()
    if plain and hashed:
        raise ValueError(f"{where}: set either key or keySha256, not both")
    if plain:
        if len(plain) < MIN_KEY_LENGTH:
            raise ValueError(f"{where}: key must be at least {MIN_KEY_LENGTH} characters long")
        digest = digest_of(plain)
    elif hashed:
        try:
            digest = bytes.fromhex(hashed)
        except ValueError:
            digest = b""
        if len(digest) != hashlib.sha256().digest_size:
            raise ValueError(f"{where}: keySha256 must be 64 hex characters (sha256 of the key)")
    else:
        raise ValueError(f"{where}: missing key (the bearer token) or keySha256 (its hex sha256)")
    models_field = fields.get("models", "").replace(",", " ").split()
    models = None if not models_field or ALL_MODELS in models_field else frozenset(models_field)
    return ApiKey(
        name=fields.get("name", "").strip() or default_name,
        digest=digest,
        models=models,
        requests_per_minute=_limit(fields, "requestsPerMinute", where),
        tokens_per_minute=_limit(fields, "tokensPerMinute", where),
    )


def key_from_secret(secret: Mapping[str, Any]) -> ApiKey:
    """Decodes a Secret's data (base64) and parses it; the decoded key is dropped right after hashing."""
    meta = secret.get("metadata", {})
    where = f"Secret {meta.get('namespace', '')}/{meta.get('name', '')}"
    fields: dict[str, str] = {}
    for field, encoded in (secret.get("data") or {}).items():
        try:
            fields[field] = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"{where}: data.{field} is not base64-encoded UTF-8 text") from None
    return parse_key(fields, str(meta.get("name", "")), where)


class KeyStore:
    """All known keys, merged over sources; lookup by the digest of the presented token."""

    def __init__(self) -> None:
        self._by_source: dict[str, list[ApiKey]] = {}
        self._by_digest: dict[bytes, ApiKey] = {}
        self._ever_had_keys = False

    def replace(self, source: str, keys: Iterable[ApiKey]) -> None:
        self._by_source[source] = list(keys)
        had_keys = bool(self._by_digest)
        by_digest: dict[bytes, ApiKey] = {}
        for source_keys in self._by_source.values():
            for key in source_keys:
                if key.digest in by_digest:
                    log.warning("event=duplicate_api_key names=%s,%s", by_digest[key.digest].name, key.name)
                by_digest.setdefault(key.digest, key)
        self._by_digest = by_digest
        self._ever_had_keys = self._ever_had_keys or bool(by_digest)
        if had_keys and not by_digest:
            log.error(
                "event=all_api_keys_removed message=%r",
                "the last API key is gone: every request is refused until a key is added "
                "(--insecure-no-auth is the only way to serve without keys)",
            )

    def __len__(self) -> int:
        return len(self._by_digest)

    @property
    def ever_had_keys(self) -> bool:
        """Once any key was loaded, removing the last one must not open the gateway to everyone."""
        return self._ever_had_keys

    def names(self) -> list[str]:
        return sorted({key.name for key in self._by_digest.values()})

    def authenticate(self, token: str) -> ApiKey | None:
        # The dict lookup is keyed by sha256(token), so its timing says nothing an attacker can use to
        # build a key byte by byte; the final check is a constant-time comparison of the digests.
        digest = digest_of(token)
        candidate = self._by_digest.get(digest)
        if candidate is not None and hmac.compare_digest(candidate.digest, digest):
            return candidate
        return None
