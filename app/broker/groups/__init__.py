"""Consumer groups: the coordinator and its group state machine, static membership, and the
SQLite store of committed offsets and group state. It runs on the broker's event loop in the
main process; handlers reach it as `broker.groups`."""

from .coordinator import GroupCoordinator
from .model import COMPLETING, EMPTY, PREPARING, STABLE
from .store import GroupStore

__all__ = ["COMPLETING", "EMPTY", "PREPARING", "STABLE", "GroupCoordinator", "GroupStore"]
