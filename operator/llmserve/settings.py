"""The settings each llmserve process builds once at start-up from its flags and environment variables
(pydantic-settings); docs/configuration.md is their table (`python -m llmserve.settings` prints it)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from llmserve.cost.prices import EXAMPLE_ENV, PRICES_ENV, PriceBook, price_book
from llmserve.render.engine_key import SecretRef, master_secret_ref
from llmserve.render.networkpolicy import Manifest, default_peers, parse_peers

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NAMESPACE_ENV = "POD_NAMESPACE"  # the chart sets it from the pod's metadata.namespace
NAMESPACE_ENV_FALLBACK = "LLMSERVE_OPERATOR_NAMESPACE"  # the burst controller's older name, still read
ENV_PREFIX = "LLMSERVE_"

# Per-provider overrides for tests and special installs, one variable per provider and setting.
BURST_OVERRIDE_PATTERN = re.compile(
    r"LLMSERVE_BURST_(?:PLUGIN_(?P<plugin>[A-Z0-9]+)|(?P<provider>[A-Z0-9]+)_(?P<what>URL|PROXY_URL_TEMPLATE|CA_FILE|PACING_SCALE))"
)
BURST_OVERRIDE_ENV_DOC = "`LLMSERVE_BURST_<PROVIDER>_URL`, `…_PROXY_URL_TEMPLATE`, `…_CA_FILE`, `…_PACING_SCALE`, `LLMSERVE_BURST_PLUGIN_<PROVIDER>`"


def pod_namespace(env: Mapping[str, str] | None = None) -> str:
    """The namespace this process runs in (the operator's: engine-key master, Lease, burst Secrets):
    $POD_NAMESPACE, else $LLMSERVE_OPERATOR_NAMESPACE, else the service account's, else `default`."""
    env = os.environ if env is None else env
    for name in (NAMESPACE_ENV, NAMESPACE_ENV_FALLBACK):
        if env.get(name):
            return env[name]
    if IN_CLUSTER_NAMESPACE_FILE.exists():
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    return "default"


# -- how a field is set: metadata the sources, the error messages and the docs table share -------------


def flag(name: str, default: Any, description: str, *, env: bool = False, doc_default: str = "",
         metavar: str = "", negatable: bool = False, **constraints: Any) -> Any:  # fmt: skip
    """A setting given by the command-line flag `name` (and, with env=True, also by its variable);
    a negatable boolean also has `--no-<name>`."""
    extra: dict[str, Any] = {"flag": name, "env": env}
    if doc_default:
        extra["doc_default"] = doc_default
    if metavar:
        extra["metavar"] = metavar
    if negatable:
        extra["negatable"] = True
    return Field(default=default, description=description, json_schema_extra=extra, **constraints)


def variable(default: Any = PydanticUndefined, description: str = "", *, doc_default: str = "",
             **kwargs: Any) -> Any:  # fmt: skip
    """A setting given by its environment variable only (LLMSERVE_<NAME>, or its validation_alias)."""
    extra: dict[str, Any] = {"env": True}
    if doc_default:
        extra["doc_default"] = doc_default
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def flag_name(field: FieldInfo) -> str:
    return str(_extra(field).get("flag", ""))


def env_names(field_name: str, field: FieldInfo) -> tuple[str, ...]:
    """The variables that set this field, first one wins; () for a flag-only or computed field."""
    extra = _extra(field)
    if "env_doc" in extra:
        return (str(extra["env_doc"]),)
    if not extra.get("env", True):
        return ()
    if isinstance(field.validation_alias, AliasChoices):
        return tuple(str(choice) for choice in field.validation_alias.choices)
    return (ENV_PREFIX + field_name.upper(),)


def _default_text(field: FieldInfo, bool_words: tuple[str, str]) -> str:
    extra = _extra(field)
    if "doc_default" in extra:
        return str(extra["doc_default"])
    value = field.default
    if field.default_factory is not None or value in (None, "", ()):
        return "—"
    if isinstance(value, bool):
        return bool_words[0] if value else bool_words[1]
    return f"`{getattr(value, 'value', value)}`"


class _DeclaredVariablesOnly(EnvSettingsSource):
    """The environment, but only for the fields declared as variables: a flag-only setting (e.g. the
    gateway's --port) is not silently taken from a stray LLMSERVE_PORT."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if not _extra(field).get("env", True) or "env_doc" in _extra(field):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class ProcessSettings(BaseSettings):
    """One process's settings: flags (passed in by its command line) over variables over defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )
    PROGRAM: ClassVar[str] = "llmserve"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _DeclaredVariablesOnly(
            settings_cls, env_prefix=ENV_PREFIX, env_ignore_empty=True
        )

    @classmethod
    def explain(cls, err: ValidationError) -> str:
        """A start-up error naming the flag or variable of each bad setting and what would be valid;
        pydantic's copy of the input is left out (a variable may be a URL with credentials in it)."""
        lines = []
        for problem in err.errors(include_url=False, include_input=False):
            field_name = str(problem["loc"][0]) if problem["loc"] else ""
            field = cls.model_fields.get(field_name)
            if field is None:  # an alias: the field whose variable this is
                field = next((f for n, f in cls.model_fields.items() if field_name in env_names(n, f)), None)
            names = [flag_name(field), *env_names(field_name, field)] if field is not None else []
            where = " / ".join(name for name in names if name) or field_name
            lines.append(f"{cls.PROGRAM}: invalid setting {where}: {problem['msg']}")
        return "\n".join(lines)

    @classmethod
    def table(cls) -> str:
        """The Markdown table of docs/configuration.md for this process: flag, variable, default, meaning."""
        rows = ["| flag | variable | default | what it sets |", "|---|---|---|---|"]
        for name, field in cls.model_fields.items():
            extra = _extra(field)
            flag_text = f"`{flag_name(field)}`" if flag_name(field) else ""
            if extra.get("negatable"):
                flag_text += f", `--no-{flag_name(field).removeprefix('--')}`"
            env_text = ", ".join(n if n.startswith("`") else f"`{n}`" for n in env_names(name, field))
            default = _default_text(field, bool_words=("on", "off") if flag_text else ("`true`", "`false`"))
            rows.append(f"| {flag_text} | {env_text} | {default} | {field.description or ''} |")
        return "\n".join(rows)


def add_flags(parser: argparse.ArgumentParser, cls: type[ProcessSettings]) -> None:
    """One argparse option per flag of `cls`, typed from the field, with no default of its own: a flag
    not given leaves the field to its variable or default (so the two cannot disagree)."""
    for name, field in cls.model_fields.items():
        option = flag_name(field)
        if not option:
            continue
        extra = _extra(field)
        default_text = _default_text(field, bool_words=("on", "off"))
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": f"{field.description} (default: {default_text.strip('`')})"}  # fmt: skip
        annotation = field.annotation
        if "metavar" in extra:
            kwargs["metavar"] = extra["metavar"]
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if extra.get("negatable") else "store_true"
        elif annotation == tuple[str, ...]:
            kwargs["action"] = "append"
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            kwargs.update(type=annotation, choices=list(annotation))
        elif get_origin(annotation) is Literal:
            kwargs["choices"] = list(get_args(annotation))
        elif annotation in (int, float):
            kwargs["type"] = annotation
        elif annotation == Path | None:
            kwargs["type"] = Path
        parser.add_argument(option, **kwargs)


def burst_overrides(env: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """LLMSERVE_BURST_<PROVIDER>_{URL,PROXY_URL_TEMPLATE,CA_FILE,PACING_SCALE} and LLMSERVE_BURST_PLUGIN_<PROVIDER>,
    by lower-case provider: {"runpod": {"url": ..., "plugin": ...}}."""
    env = os.environ if env is None else env
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        match = BURST_OVERRIDE_PATTERN.fullmatch(name)
        if match is None or not value:
            continue
        provider = (match["plugin"] or match["provider"]).lower()
        out.setdefault(provider, {})["plugin" if match["plugin"] else match["what"].lower()] = value
    return out


def burst_overrides_field(description: str, env_doc: str = BURST_OVERRIDE_ENV_DOC) -> Any:
    return Field(default_factory=burst_overrides, description=description,
                 json_schema_extra={"env_doc": env_doc, "doc_default": "—"})  # fmt: skip


class OperatorSettings(ProcessSettings):
    """`llmserve operator`: its flags and LLMSERVE_* variables."""

    PROGRAM: ClassVar[str] = "llmserve operator"

    # -- flags --------------------------------------------------------------------------------------
    namespaces: tuple[str, ...] = flag("--namespace", (), "LLMServes watched (repeatable)",
                                       doc_default="all namespaces", exclude=True)  # fmt: skip
    liveness_port: int = flag("--liveness-port", 8080, "port of `/healthz` (0: none)", ge=0, le=65535)
    metrics_port: int = flag("--metrics-port", 9090, "port of the operator's Prometheus `/metrics` (0: none)",
                             ge=0, le=65535)  # fmt: skip
    verbose: bool = flag("--verbose", False, "DEBUG logs")
    leader_election: bool = flag("--no-leader-election", True, "act without the Lease (one replica only)",
                                 doc_default="elect")  # fmt: skip
    # -- environment --------------------------------------------------------------------------------
    namespace: str = variable(
        default_factory=lambda: pod_namespace({}),
        validation_alias=AliasChoices(NAMESPACE_ENV, NAMESPACE_ENV_FALLBACK),
        description="the operator's namespace (*chart*)",
        doc_default="see above",
    )
    liveness_addr: str = variable("0.0.0.0", "address of `/healthz`")
    metrics_addr: str = variable("0.0.0.0", "address of `/metrics`")
    watch_timeout_seconds: int = variable(300, "kopf's server-side watch timeout", ge=1)
    batch_idle_seconds: float = variable(1.0, "kopf's per-object event batching window", gt=0)
    kube_max_in_flight: int = variable(
        16, "Kubernetes requests in flight per process (status writes have their own 4)", ge=1
    )
    autoscaler_metrics_source: Literal["direct", "prometheus"] = variable(
        "direct", "`direct` or `prometheus`, when `spec.autoscaling.metricsSource` is unset"
    )
    prometheus_url: str = variable(
        "", "Prometheus for the `prometheus` source, when `spec.autoscaling.prometheusUrl` is unset"
    )
    autoscaler_scrape_timeout_seconds: float = variable(
        1.0, "per-replica `/metrics` timeout (Prometheus: at least 2 s)", gt=0
    )
    gateway_selector: str = variable(
        "app.kubernetes.io/name=llmserve,app.kubernetes.io/component=gateway",
        "label selector of the gateway pods whose held and queued requests the autoscaler counts "
        "(empty: engines only) (*chart*)",
    )
    gateway_namespace: str = variable(
        "", "namespace of those gateway pods (*chart*)", doc_default="all namespaces"
    )
    gateway_metrics_port: int = variable(
        9091, "the gateway pods' metrics port when no container port is named `metrics`", ge=1, le=65535
    )
    cost_interval_seconds: float = variable(60.0, "cost meter period", gt=0)
    cost_max_gap_seconds: float = variable(900.0, "an outage longer than this is not charged", gt=0)
    burst_interval_seconds: float = variable(10.0, "burst controller period", gt=0)
    cluster_id: str = variable(
        "", "ownership tag of rented instances", doc_default="`kube-system` UID (16 chars)"
    )
    lease_name: str = variable("llmserve-operator", "leader-election Lease (*chart*)")
    lease_namespace: str = variable("", "where the Lease lives", doc_default="the operator's namespace")
    lease_duration_seconds: int = variable(15, "takeover after this long without renewal (*chart*)", ge=1)
    lease_renew_deadline_seconds: float = variable(
        10.0, "the leader exits when it cannot renew for this long (*chart*)", gt=0
    )
    lease_retry_period_seconds: float = variable(2.0, "renew / retry period (*chart*)", gt=0)
    engine_key_secret: str = variable(
        "", "the engine-key master Secret, `namespace/name` or a name in the operator's namespace (*chart*)",
        doc_default="`<namespace>/llmserve-engine-key-master`",
    )  # fmt: skip
    engine_network_policy: bool = variable(True, "render a NetworkPolicy per LLMServe (*chart*)")
    engine_ingress_from: str = variable(
        "", "JSON list of NetworkPolicyPeers allowed to reach engines (*chart*)",
        doc_default="the gateway and operator pods of the operator's namespace",
    )  # fmt: skip
    gpu_usd_per_hour: str = variable(
        "", "JSON object: USD per local GPU-hour by GPU product, for `status.cost` ([planning](planning.md)) (*chart*)",
        doc_default="example prices",
    )  # fmt: skip
    gpu_prices_are_examples: bool = variable(
        False, "mark the prices above as examples in `status.cost` (*chart*)"
    )
    burst_clock_offset_file: str = variable(
        "", "a file holding seconds added to the burst controller's clock (cluster tests only)"
    )
    burst_providers: dict[str, dict[str, str]] = burst_overrides_field(
        "provider overrides for tests and special installs: another API URL, RunPod's proxy address, a CA "
        "for the provider's TLS proxy, a factor on the documented minimum intervals between calls (tests: 0.1), "
        "an out-of-tree client `module:callable` ([burst](burst.md))"
    )

    @field_validator("engine_key_secret")
    @classmethod
    def _is_a_secret_reference(cls, value: str) -> str:
        master_secret_ref(value, "default")  # raises ValueError saying what would be valid
        return value.strip()

    @field_validator("engine_ingress_from")
    @classmethod
    def _are_network_policy_peers(cls, value: str) -> str:
        if value.strip():
            parse_peers(value.strip())
        return value.strip()

    @field_validator("gpu_usd_per_hour")
    @classmethod
    def _are_prices(cls, value: str) -> str:
        price_book({PRICES_ENV: value})
        return value

    def engine_key_ref(self) -> SecretRef:
        return master_secret_ref(self.engine_key_secret, self.namespace)

    def engine_ingress_peers(self) -> list[Manifest]:
        """Who may reach the engines: LLMSERVE_ENGINE_INGRESS_FROM, else the llmserve pods of our namespace."""
        return (
            parse_peers(self.engine_ingress_from)
            if self.engine_ingress_from
            else default_peers(self.namespace)
        )

    def prices(self) -> PriceBook:
        flagged = "true" if self.gpu_prices_are_examples else ""
        return price_book({PRICES_ENV: self.gpu_usd_per_hour, EXAMPLE_ENV: flagged})


_operator: OperatorSettings | None = None


def install(settings: OperatorSettings) -> OperatorSettings:
    """Makes `settings` the operator's, before its handler modules are imported."""
    global _operator
    _operator = settings
    return settings


def operator_settings() -> OperatorSettings:
    """The operator's settings: those installed at start-up, else read from the environment once (unit
    tests and benchmarks that call handlers without `llmserve operator`)."""
    global _operator
    if _operator is None:
        _operator = OperatorSettings()
    return _operator


def main() -> None:
    """Prints docs/configuration.md's tables (the unit test checks the page holds them)."""
    from llmserve.gateway.settings import GatewaySettings

    for cls in (OperatorSettings, GatewaySettings):
        print(f"### `{cls.PROGRAM}`\n\n{cls.table()}\n")


if __name__ == "__main__":
    main()
