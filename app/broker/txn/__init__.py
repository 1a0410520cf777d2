"""The transaction coordinator: transactional.id -> producer id and epoch, the state of each
transaction (model.py), its durable store (store.py, transactions.sqlite) and the state
machine that writes markers and completes group offsets (coordinator.py)."""

from .coordinator import InitResult, MarkerWriter, OffsetCompleter, TransactionCoordinator
from .model import TxnMetadata, TxnState
from .store import TransactionStore

__all__ = [
    "InitResult",
    "MarkerWriter",
    "OffsetCompleter",
    "TransactionCoordinator",
    "TransactionStore",
    "TxnMetadata",
    "TxnState",
]
