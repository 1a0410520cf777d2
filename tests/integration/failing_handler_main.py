"""Runs the real service with deliberate bugs: ListOffsets, DescribeConfigs and appends
raise for topics named "boom-*". It stands in for a handler bug nobody has found yet, so the
test can check what such a bug costs a client: an error code, not its connection."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from app.broker.handlers import configs, offsets
from app.storage.log.partition import PartitionLog


def _breaking(handler: Any, topics_of: Any) -> Any:
    async def handle(broker: Any, req: Any) -> Any:
        if any(name.startswith("boom-") for name in topics_of(req.body)):
            raise RuntimeError("deliberate handler bug for a boom- topic")
        return await handler(broker, req)

    return handle


def _patch(module: Any, topics_of: Any) -> None:
    module.APIS[:] = [
        dataclasses.replace(spec, handler=_breaking(spec.handler, topics_of))
        for spec in module.APIS
    ]


_patch(offsets, lambda body: [t.name for t in body.topics])
_patch(configs, lambda body: [r.resource_name for r in body.resources])

_append = PartitionLog.append


def _breaking_append(self: PartitionLog, *args: Any) -> Any:
    if self.topic.startswith("boom-"):
        raise RuntimeError("deliberate append bug for a boom- topic")
    return _append(self, *args)


PartitionLog.append = _breaking_append  # type: ignore[method-assign]

if __name__ == "__main__":
    from app.__main__ import main

    main(sys.argv[1:])
