"""One module per Kafka API family; each exports APIS."""

from __future__ import annotations

import importlib
import pkgutil

from ..context import ApiSpec


def all_apis() -> list[ApiSpec]:
    """Every module of this package that defines APIS contributes its entries."""
    specs: list[ApiSpec] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        specs.extend(getattr(module, "APIS", ()))
    keys = [s.key for s in specs]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:
        raise RuntimeError(f"API keys handled twice: {sorted(duplicated)}")
    return specs
