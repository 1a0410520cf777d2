"""What every worker process of the service does first: die with the service and yield the
CPU to it. Shared by the indexer workers and the search and cleaner pools."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1


def worker_started(parent_pid: int, nice: int) -> None:
    """A worker must not outlive a killed service: it would hold files and memory, and an
    indexer would index the same partitions beside the next service's. Linux kills it when
    the service dies (PR_SET_PDEATHSIG); one whose service is already gone exits."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)
    os.nice(nice)
