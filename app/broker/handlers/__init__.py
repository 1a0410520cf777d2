"""One module per Kafka API family; each exports APIS."""

from __future__ import annotations

from .base import ApiSpec


def all_apis() -> list[ApiSpec]:
    from . import api_versions, coordinator, fetch, metadata, offsets, produce, producers, topics

    specs: list[ApiSpec] = []
    for module in (api_versions, metadata, produce, fetch, offsets, topics, producers, coordinator):
        specs.extend(module.APIS)
    return specs
