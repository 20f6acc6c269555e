"""The services: one folder each, with a `spec` module whose SPEC is what `rtvi serve NAME` runs.

Adding a service is adding a folder here; nothing else needs to know its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtvi.http.spec import ServiceSpec


def names() -> list[str]:
    """Every service folder under rtvi/services (each a package with a spec module)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def load_spec(name: str) -> ServiceSpec:
    if name not in names():
        raise ValueError(f"no service {name!r}; available: {', '.join(names())}")
    spec: ServiceSpec = importlib.import_module(f"{__name__}.{name}.spec").SPEC
    return spec
