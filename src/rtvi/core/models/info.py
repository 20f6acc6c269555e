"""How the loaded model describes itself to /v1/models, health and the bus messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owned_by: str
    api_type: str  # "embedding" | "vlm"
    details: dict[str, Any] = field(default_factory=dict)  # e.g. {"dimension": 384}
