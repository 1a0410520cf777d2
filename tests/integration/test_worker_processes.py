"""The service's worker processes (indexer, search pool, cleaner pool) never outlive it: a
SIGKILLed service must not leave processes behind that hold files and memory (and, for the
indexer, would index beside the next service)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from tests.integration.conftest import Server, unique_topic


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            out.add(p)
    return out


def test_sigkilled_service_leaves_no_worker_process(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server("--index-commit-ms", "100")
    topic = unique_topic("orphans")
    p = Producer({"bootstrap.servers": srv.bootstrap})
    for i in range(50):
        p.produce(topic, b"word%d" % i)
    p.flush(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = srv.get(f"/search?topic={topic}&q=*")
        if r.status_code == 200 and r.json()["total"] == 50:
            break
        time.sleep(0.2)
    assert r.json()["total"] == 50
    children = _children(srv.pid)
    # The indexer worker, the search pool's processes and their resource tracker.
    assert len(children) >= 2, children
    srv.kill()
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _alive(children)
    cmdlines = {c: Path(f"/proc/{c}/cmdline").read_bytes()[:120] for c in left}
    for c in left:
        os.kill(c, 9)
    assert not left, f"processes outlived the service: {cmdlines}"
