"""`python -m app users ...` run for real in a subprocess: the password goes in through stdin
or a file and never shows in the output or the database files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.security.cli import data_dir, is_cli
from app.security.store import SecurityStore
from app.security.users import verify_user_password

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Tr0ub4dor&3-unique-marker"


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHRONIK_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=60,
    )


def everything_on_disk(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in d.rglob("*") if p.is_file())


def test_set_list_delete(tmp_path: Path) -> None:
    d = str(tmp_path)
    done = run("users", "set", "alice", "--data-dir", d, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert "set SCRAM-SHA-256 credential of user alice" in done.stdout
    assert "user credential set user=alice" in done.stderr  # the audit line
    pw_file = tmp_path / "pw.txt"
    pw_file.write_text("second-" + PASSWORD + "\n")
    done = run(
        "--data-dir",
        d,
        "users",
        "set",
        "alice",
        "--mechanism",
        "SCRAM-SHA-512",
        "--iterations",
        "8192",
        "--password-file",
        str(pw_file),
    )
    assert done.returncode == 0, done.stderr
    pw_file.unlink()
    listed = run("users", "list", env={"CHRONIK_DATA_DIR": d})
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "alice SCRAM-SHA-256(iterations=4096) SCRAM-SHA-512(iterations=8192)"
    ]
    store = SecurityStore(tmp_path / "security.sqlite")
    try:
        assert verify_user_password(store, "alice", PASSWORD.encode())  # newline stripped
        assert verify_user_password(store, "alice", ("second-" + PASSWORD).encode())
        assert not verify_user_password(store, "alice", (PASSWORD + "\n").encode())
        cred = store.credential("alice", "SCRAM-SHA-512")
        assert cred is not None and cred.iterations == 8192
    finally:
        store.close()
    outputs = "".join(p.stdout + p.stderr for p in (done, listed))
    assert PASSWORD not in outputs
    disk = everything_on_disk(tmp_path)
    assert b"alice" in disk and PASSWORD.encode() not in disk

    gone = run("users", "delete", "alice", "--mechanism", "SCRAM-SHA-256", "--data-dir", d)
    assert gone.returncode == 0 and "deleted SCRAM-SHA-256" in gone.stdout
    assert run("users", "list", "--data-dir", d).stdout.startswith("alice SCRAM-SHA-512")
    assert run("users", "delete", "alice", "--data-dir", d).returncode == 0
    again = run("users", "delete", "alice", "--data-dir", d)
    assert again.returncode == 1 and "no SCRAM credential of user alice" in again.stderr
    assert run("users", "list", "--data-dir", d).stdout == ""


def test_refusals(tmp_path: Path) -> None:
    d = str(tmp_path)
    for stdin, args, message in [
        ("\n", [], "the password is empty"),
        ("", [], "the password is empty"),
        ("pw\n", ["--iterations", "100"], "Too few iterations"),
        ("pw\n", ["--iterations", "99999"], "Too many iterations"),
        ("pw\n", ["--password-file", str(tmp_path / "missing")], "cannot read the password"),
    ]:
        done = run("users", "set", "bob", "--data-dir", d, *args, stdin=stdin)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    bad = run("users", "set", "bob", "--mechanism", "PLAIN", "--data-dir", d, stdin="pw\n")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # Nothing was created by any of them.
    assert run("users", "list", "--data-dir", d).stdout == ""


def test_the_server_flags_still_parse() -> None:
    done = run("--help")
    assert (
        done.returncode == 0 and "--kafka-port" in done.stdout and "--tls-cert-file" in done.stdout
    )
    bad = run("--kafka-security-protocol", "SSL")
    assert bad.returncode == 2 and "SSL needs tls_cert_file and tls_key_file" in bad.stderr


def test_dispatch_and_data_dir_resolution(tmp_path: Path) -> None:
    assert is_cli(["users", "list"])
    assert is_cli(["--data-dir", "/x", "users", "list"])
    assert is_cli(["--data-dir=/x", "users", "list"])
    assert not is_cli([])
    assert not is_cli(["--kafka-port", "9092"])
    assert not is_cli(["--data-dir", "users"])  # "users" is the data dir here
    assert data_dir("/a", {"CHRONIK_DATA_DIR": "/b"}) == Path("/a")
    assert data_dir(None, {"CHRONIK_DATA_DIR": "/b"}) == Path("/b")
    assert data_dir(None, {"CHRONIK_DATA_DIR": ""}) == Path("./data")
    assert data_dir(None, {}) == Path("./data")
