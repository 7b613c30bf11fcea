"""Shared building blocks of the API models: camelCase wire names and Kubernetes conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict[str, object]:
        """The object as Kubernetes stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(ApiModel):
    """One observation of the resource's state, in the shape of metav1.Condition."""

    type: str = Field(description="Kind of condition, e.g. Ready, Progressing, Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why the condition is in its status.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: datetime = Field(
        description="When the condition last changed status (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was computed from."
    )


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
