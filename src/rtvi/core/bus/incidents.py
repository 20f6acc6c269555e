"""What every nv.Incident says about where it happened and which detector raised it (spec §6.4): the
VLM service's alert prompts and the alert rules (core/alerts) fill them the same way."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtvi.core.bus.schema import ext_pb2
from rtvi.settings import IncidentPlaceSettings

# Incident.info.priority when INCIDENT_PRIORITY is not set: every incident is an anomaly, which the
# reference's example marks "high".
DEFAULT_INCIDENT_PRIORITY = "high"


def place_slug(name: str) -> str:
    """A place id from its name (reference example): "Dock Entrance - East" -> "dock-entrance-east"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a stream's incidents happen: the stream's place_* fields, else the PLACE_* settings."""

    name: str
    type: str
    lat: float
    lon: float
    alt: float
    x: float
    y: float
    id: str = ""  # "" -> the slug of `name` (see `place_slug`)

    @classmethod
    def of(cls, meta: Mapping[str, Any], settings: IncidentPlaceSettings) -> Place:
        """A stream's place_* fields (spec §3.1), each falling back to its PLACE_* setting; the id is the
        stream's place_id when it has one, else derived from the name."""

        def pick(key: str, default: Any) -> Any:
            value = meta.get(key)
            return default if value is None else value

        s = settings
        return cls(
            name=str(pick("place_name", s.place_name)),
            type=str(pick("place_type", s.place_type)),
            lat=float(pick("place_lat", s.place_lat)),
            lon=float(pick("place_lon", s.place_lon)),
            alt=float(pick("place_alt", s.place_alt)),
            x=float(pick("place_coordinate_x", s.place_coordinate_x)),
            y=float(pick("place_coordinate_y", s.place_coordinate_y)),
            id=str(meta.get("place_id") or ""),
        )


@dataclass(frozen=True, slots=True)
class AnalyticsModule:
    """The detector that raises incidents, and the priority it gives them (Incident.info.priority)."""

    id: str
    description: str
    source: str
    priority: str = DEFAULT_INCIDENT_PRIORITY

    @classmethod
    def of(cls, settings: IncidentPlaceSettings) -> AnalyticsModule:
        s = settings
        priority = s.incident_priority or DEFAULT_INCIDENT_PRIORITY
        return cls(s.analytics_module_id, s.analytics_module_description, s.analytics_module_source, priority)


def fill_place(incident: ext_pb2.Incident, place: Place, module: AnalyticsModule, version: str) -> None:
    """The incident's place and analytics module (its `info` is left to the caller)."""
    incident.place.id = place.id or place_slug(place.name)
    incident.place.name, incident.place.type = place.name, place.type
    incident.place.location.lat, incident.place.location.lon = place.lat, place.lon
    incident.place.location.alt = place.alt
    incident.place.coordinate.x, incident.place.coordinate.y = place.x, place.y
    m = incident.analyticsModule
    m.id, m.description, m.source, m.version = module.id, module.description, module.source, version
