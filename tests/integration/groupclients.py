"""Consumer-group members driven by the three real Python clients, in one shape.

A `Member` runs one subscribed consumer in its own thread (or, for
`SubprocessMember`, in a child process that can be SIGKILLed). Whatever the
client, it records the same events into a `MemberState`:

- assign / revoke / lost: the partitions of each rebalance callback, with a
  `time.monotonic()` timestamp (CLOCK_MONOTONIC is system-wide, so a child's
  timestamps compare with the parent's);
- records: every consumed (partition, offset), recorded *before* the commit;
- commit: the offsets of every successful synchronous commit;
- error: anything that went wrong (a failed commit, a consumer error).

Processing is "record, then commit synchronously before polling again"; on
revoke a member commits whatever it processed and has not committed yet. So a
correct broker gives every message to exactly one member.

Run as `python -m tests.integration.groupclients member --client ...` from the
repository root, it is the child side of `SubprocessMember`: it prints its
events as JSON lines on stdout and closes gracefully when stdin reaches EOF.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .groupmembers import MEMBERS, Member, MemberState, _now, range_conf
from .grouputil import Event

REPO_ROOT = Path(__file__).resolve().parents[2]


class SubprocessMember:
    """A Member in a child process, so that it can die without a LeaveGroup (SIGKILL)."""

    def __init__(
        self,
        client: str,
        bootstrap: str,
        group: str,
        topic: str,
        *,
        name: str = "",
        conf: dict[str, Any] | None = None,
        range_assignor: bool = False,
    ) -> None:
        self.client = client
        self.name = name or f"{client}-child"
        self.state = MemberState()
        self.cmd = [
            sys.executable,
            "-m",
            "tests.integration.groupclients",
            "member",
            "--client",
            client,
            "--bootstrap",
            bootstrap,
            "--group",
            group,
            "--topic",
            topic,
            "--conf",
            json.dumps(conf or {}),
        ]
        if range_assignor:
            self.cmd.append("--range")
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.bad_lines: list[bytes] = []

    def start(self) -> SubprocessMember:
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO_ROOT
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.state.apply(ev)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL: no LeaveGroup, no commit. Returns the time of the kill."""
        assert self.proc is not None
        t = _now()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return t

    def close(self, timeout: float = 30) -> float:
        assert self.proc is not None and self.proc.stdin is not None
        t0 = _now()
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not close within {timeout}s") from None
        if self._reader is not None:
            self._reader.join(5)
        return _now() - t0


def start_member(
    client: str, bootstrap: str, group: str, topic: str, **kw: Any
) -> Member | SubprocessMember:
    """A started member; `subprocess=True` runs it in a child, `range_assignor=True`
    makes it offer only the 'range' assignor."""
    if kw.pop("subprocess", False):
        return SubprocessMember(client, bootstrap, group, topic, **kw).start()
    if kw.pop("range_assignor", False):
        kw["conf"] = {**range_conf(client), **(kw.get("conf") or {})}
    return MEMBERS[client](bootstrap, group, topic, **kw).start()


# --------------------------------------------------------------------------- child process


def close_all(members: Iterable[Member | SubprocessMember]) -> None:
    """Cleanup for finally blocks: close what still runs, kill children that hang."""
    for m in members:
        try:
            if isinstance(m, SubprocessMember):
                if m.running:
                    m.close(15)
            elif m.running:
                m.close(15)
        except Exception:
            if isinstance(m, SubprocessMember) and m.proc is not None:
                m.proc.kill()


def union_check(
    members: Iterable[Member | SubprocessMember], produced: set[tuple[int, int]]
) -> tuple[list[tuple[int, int]], set[tuple[int, int]], set[tuple[int, int]]]:
    """(duplicates, missing, unexpected) of the consumed (partition, offset) across members."""
    counts: Counter[tuple[int, int]] = Counter()
    for m in members:
        counts.update(m.state.consumed())
    dups = sorted(k for k, v in counts.items() if v > 1)
    got = set(counts)
    return dups, produced - got, got - produced


def _child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["member"])
    ap.add_argument("--client", required=True, choices=sorted(MEMBERS))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--conf", default="{}")
    ap.add_argument("--range", action="store_true")
    args = ap.parse_args(argv)
    out_lock = threading.Lock()

    def sink(ev: Event) -> None:
        line = json.dumps(ev)
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    conf = json.loads(args.conf)
    if args.range:
        conf.update(range_conf(args.client))
    member = MEMBERS[args.client](args.bootstrap, args.group, args.topic, conf=conf, sink=sink)
    member.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    with contextlib.suppress(Exception):
        sys.stdin.read()
    member.close()


if __name__ == "__main__":
    _child_main(sys.argv[1:])
