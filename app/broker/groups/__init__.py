"""Consumer groups: the coordinator and its group state machine, static membership,
transactional offset commits, and the SQLite store of committed and pending offsets and
group state. It runs on the broker's event loop in the main process; handlers reach it as
`broker.groups`."""

from .coordinator import GroupCoordinator
from .model import COMPLETING, EMPTY, PREPARING, STABLE
from .store import GroupStore
from .txn_offsets import MAX_METADATA_BYTES

__all__ = [
    "COMPLETING",
    "EMPTY",
    "MAX_METADATA_BYTES",
    "PREPARING",
    "STABLE",
    "GroupCoordinator",
    "GroupStore",
]
