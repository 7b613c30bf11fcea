"""Per-instance secrets for rented engines: an API key, a self-signed TLS pair, and the vLLM launch spec.

A rented engine is on the public internet. It only ever runs with vLLM's `--api-key` set to a key
minted for that one instance, with the engine guard (burst.engine_guard) refusing every route but
/health without that key, and behind TLS: RunPod's HTTPS proxy terminates TLS for us, while on
Vast.ai (plain TCP) vLLM serves TLS itself with a certificate minted here, whose SHA-256 fingerprint
the caller stores and pins. Everything here is pure (apart from the system's random source).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmserve.burst.start_script import ENGINE_COMMAND, ENTRYPOINT
from llmserve.burst.types import LaunchSpec, instance_name

API_KEY_PREFIX = "llmsk-"
TLS_DIR = "/run/llmserve-tls"  # where the container finds its certificate (Vast only)
GUARD_DIR = "/run/llmserve-guard"  # the start script puts it on PYTHONPATH
GUARD_MODULE = "llmserve_engine_guard"  # burst/engine_guard.py, under this name in the container
GUARD_PATH = f"{GUARD_DIR}/{GUARD_MODULE}.py"
GUARD_MIDDLEWARE = f"{GUARD_MODULE}.EngineKeyGuard"
CERT_VALIDITY_DAYS = 30


def mint_api_key() -> str:
    """A fresh 256-bit key, URL-safe, prefixed so a leaked one is recognisable in a scanner."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TlsMaterial:
    cert_pem: str
    key_pem: str = field(repr=False)
    fingerprint_sha256: str  # lower-case hex of the DER certificate's SHA-256


def fingerprint_sha256(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


def fingerprint_of_pem(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return fingerprint_sha256(cert.public_bytes(serialization.Encoding.DER))


def fingerprint_matches(cert_der: bytes, expected: str) -> bool:
    """Constant-time comparison of a peer certificate against the pinned fingerprint."""
    return hmac.compare_digest(fingerprint_sha256(cert_der), expected.replace(":", "").lower())


def mint_tls(common_name: str, now: datetime, hosts: tuple[str, ...] = ()) -> TlsMaterial:
    """A P-256 self-signed certificate for one instance. `now` is injected (pure, testable)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    alt_names: list[x509.GeneralName] = [x509.DNSName(common_name[:253])]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return TlsMaterial(cert_pem, key_pem, fingerprint_sha256(cert.public_bytes(serialization.Encoding.DER)))


def pinned_ssl_context(cert_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly this certificate (pinning); host names are not checked
    because a Vast instance's address is a shared host IP and changes when the instance moves."""
    context = ssl.create_default_context(cadata=cert_pem)
    context.check_hostname = False
    return context


@dataclass(frozen=True)
class EngineSecrets:
    """What the caller keeps (in a Secret) to talk to one rented engine."""

    api_key: str = field(repr=False)
    tls_cert_pem: str | None = None  # None where the provider's proxy serves TLS (RunPod)
    tls_fingerprint_sha256: str | None = None


@dataclass(frozen=True)
class EngineRequest:
    """What to run on the rented GPU (provider-neutral)."""

    cluster_id: str
    owner: str  # <namespace>/<llmserve name>
    slot: int
    image: str
    model: str
    served_model_name: str
    gpu_type: str
    gpus: int
    max_usd_per_hour: float
    port: int = 8000
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    disk_gb: int = 80


def guard_module_text() -> str:
    """The engine guard's source, delivered verbatim (it imports nothing but the standard library)."""
    return resources.files("llmserve.burst").joinpath("engine_guard.py").read_text(encoding="utf-8")


def vllm_launch_spec(
    provider: str, request: EngineRequest, now: datetime | None = None
) -> tuple[LaunchSpec, EngineSecrets]:
    """The launch spec of a vLLM engine that is never open: a per-instance key, the engine guard, TLS.

    Every rented engine runs the start script (burst.start_script), which writes the engine guard
    module (burst.engine_guard) before `vllm serve` loads it with `--middleware`: the key then guards
    every route but /health, not only vLLM's /v1 family. `runpod`: the engine speaks HTTP behind
    RunPod's HTTPS proxy. `vastai` (and any provider without a TLS proxy): the engine serves TLS itself
    with a fresh self-signed certificate.
    """
    name = instance_name(request.cluster_id, request.owner, request.slot)
    api_key = mint_api_key()
    args = [
        *ENGINE_COMMAND,
        "--model", request.model,
        "--served-model-name", request.served_model_name,
        "--host", "0.0.0.0",
        "--port", str(request.port),
        "--api-key", api_key,
        "--middleware", GUARD_MIDDLEWARE,
        *request.extra_args,
    ]  # fmt: skip
    if request.gpus > 1 and not any(
        a.startswith(("--tensor-parallel-size", "-tp")) for a in request.extra_args
    ):
        args += ["--tensor-parallel-size", str(request.gpus)]
    files: dict[str, str] = {GUARD_PATH: guard_module_text()}
    secrets_ = EngineSecrets(api_key=api_key)
    if provider != "runpod":
        tls = mint_tls(name, now or datetime.now(UTC))
        cert_path, key_path = f"{TLS_DIR}/cert.pem", f"{TLS_DIR}/key.pem"
        files.update({cert_path: tls.cert_pem, key_path: tls.key_pem})
        args += ["--ssl-certfile", cert_path, "--ssl-keyfile", key_path]
        secrets_ = EngineSecrets(api_key, tls.cert_pem, tls.fingerprint_sha256)
    spec = LaunchSpec(
        name=name,
        cluster_id=request.cluster_id,
        image=request.image,
        args=tuple(args),
        env=dict(request.env),
        port=request.port,
        gpu_type=request.gpu_type,
        gpus=request.gpus,
        max_usd_per_hour=request.max_usd_per_hour,
        disk_gb=request.disk_gb,
        files=files,
        entrypoint=ENTRYPOINT,
    )
    return spec, secrets_
