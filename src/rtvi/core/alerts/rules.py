"""What an alert rule is (POST /v1/alerts/rules, docs/alerts.md): the request's model, validated here for
every way a rule arrives (create, update, the database), and the rule as the engine holds it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# An MQTT topic a rule publishes to: no wildcards (they are for subscribers), no $SYS-style topics.
_MQTT_TOPIC = re.compile(r"^[^#+$\x00][^#+\x00]{0,254}$")
MAX_ACTIONS = 8
MAX_STREAMS = 1000


class WebhookAction(BaseModel):
    """POST the incident as JSON to `url`, signed with `secret` (header X-Rtvi-Signature)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    secret: Annotated[str, Field(max_length=500)] = ""

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class MqttAction(BaseModel):
    """Publish the incident as JSON on `topic` of the broker at `url` (else RTVI_ALERT_MQTT_URL)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["mqtt"]
    topic: Annotated[str, Field(max_length=255)] = ""  # "" -> rtvi/alerts/<rule id>
    url: Annotated[str, Field(max_length=2000)] = ""
    qos: Annotated[int, Field(ge=0, le=2)] = 1
    retain: bool = False

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if v and not _MQTT_TOPIC.match(v):
            raise ValueError("must be a topic name without wildcards (+, #) that does not start with $")
        return v

    @field_validator("url")
    @classmethod
    def _mqtt(cls, v: str) -> str:
        if v and not re.match(r"^mqtts?://[^/\s]+/?$", v):
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        return v


class KafkaAction(BaseModel):
    """The incident as nv.Incident on Kafka (KAFKA_INCIDENT_TOPIC unless `topic`)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["kafka"]
    topic: Annotated[str, Field(max_length=249, pattern=r"^[A-Za-z0-9._-]*$")] = ""


Action = Annotated[WebhookAction | MqttAction | KafkaAction, Field(discriminator="type")]


class RuleFields(BaseModel):
    """The fields a rule is made of; each optional here (PATCH), completed and checked by RuleSpec."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    query: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    # A reference picture (data: URI): the rule watches for what looks like it (with `query`: both).
    image: Annotated[str, Field(min_length=1, max_length=2_000_000)] | None = None
    stream_ids: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=MAX_STREAMS)]
        | None
    ) = None
    # 0..1: how far above its stream's usual score a chunk must be (docs/alerts.md, calibration).
    sensitivity: Annotated[float, Field(ge=0, le=1)] | None = None
    # An absolute floor the score must pass as well (cosine); null: none beyond the calibration.
    min_score: Annotated[float, Field(ge=-1, le=1)] | None = None
    cooldown_s: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None
    min_consecutive: Annotated[int, Field(ge=1, le=100)] | None = None
    verify: Annotated[str, Field(min_length=1, max_length=4000)] | None = None
    actions: Annotated[list[Action], Field(max_length=MAX_ACTIONS)] | None = None
    paused: bool | None = None


class RuleSpec(RuleFields):
    """A complete rule: what POST /v1/alerts/rules takes. `stream_ids` absent: every stream."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    sensitivity: Annotated[float, Field(ge=0, le=1)] = 0.5
    cooldown_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 60.0
    min_consecutive: Annotated[int, Field(ge=1, le=100)] = 1
    actions: Annotated[list[Action], Field(max_length=MAX_ACTIONS)] = []
    paused: bool = False

    @model_validator(mode="after")
    def _needs_something_to_watch(self) -> RuleSpec:
        if not self.query and not self.image:
            raise ValueError("a rule needs a query text, a reference image (data: URI), or both")
        if self.image is not None and not self.image.startswith("data:"):
            raise ValueError("image must be a data: URI")
        return self

    def patched(self, patch: RuleFields) -> RuleSpec:
        """This rule with the fields `patch` sets (an explicit null clears an optional field)."""
        return RuleSpec.model_validate({**self.model_dump(), **patch.model_dump(exclude_unset=True)})

    def watches(self, other: RuleSpec) -> bool:
        """Whether `other` watches for the same thing (the query vector can be kept)."""
        return (self.query, self.image) == (other.query, other.image)

    def public(self) -> dict[str, Any]:
        """As the API shows it: secrets are never shown, only whether one is set; the image is too large
        to repeat (its presence is)."""
        body = self.model_dump(exclude={"image"})
        body["image"] = self.image is not None
        for action in body["actions"]:
            if action["type"] == "webhook":
                action["secret"] = bool(action["secret"])
            if action.get("url"):
                action["url"] = shown_target(action["url"])
        return body


def shown_target(url: str) -> str:
    """Where an action goes, as the API shows it: scheme, host and port only (a webhook's path often
    holds its token, Slack's and Teams' do; an MQTT URL may hold a password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    if parts.port:
        shown += f":{parts.port}"
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{shown}{rest}"


@dataclass(frozen=True, slots=True)
class Rule:
    """A stored rule as the engine scores with it: `vector` is its query in the served model's space."""

    id: str
    spec: RuleSpec
    vector: npt.NDArray[np.float32] | None
    vector_model: str | None
    created_at: float
    updated_at: float

    def applies_to(self, stream_id: str) -> bool:
        return not self.spec.paused and (self.spec.stream_ids is None or stream_id in self.spec.stream_ids)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.spec.public(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
