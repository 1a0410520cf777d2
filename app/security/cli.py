"""`python -m app users ...`: SCRAM users in the data dir's security.sqlite, for the first user
before any client can authenticate. The password comes from stdin or a file, never argv, so
it does not show in `ps` or the shell history."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ..config import Settings
from . import audit, scram
from .store import FILE_NAME, SecurityStore
from .users import set_password, user_error

CLI_PRINCIPAL = "local:cli"


def is_cli(argv: Sequence[str]) -> bool:
    """Whether argv asks for the users CLI (maybe after --data-dir) rather than the server."""
    args = list(argv)
    while args and args[0].startswith("--data-dir"):
        args = args[1:] if "=" in args[0] else args[2:]
    return bool(args) and args[0] == "users"


def data_dir(flag: str | None, environ: Mapping[str, str]) -> Path:
    """The data dir as load_settings resolves it: the flag, else CHRONIK_DATA_DIR, else the
    default (an empty value counts as unset)."""
    raw = flag if flag is not None else environ.get("CHRONIK_DATA_DIR")
    return Path(raw) if raw else Settings().data_dir


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a value given before it.
    common.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="where all state lives (env CHRONIK_DATA_DIR)"
    )
    parser = argparse.ArgumentParser(
        prog="chronik users", description="SCRAM users of both listeners", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_set = sub.add_parser(
        "set",
        parents=[common],
        help="create a user or replace its credential; password from stdin or --password-file",
    )
    p_set.add_argument("name")
    p_set.add_argument("--mechanism", choices=sorted(scram.MECHANISMS), default="SCRAM-SHA-256")
    p_set.add_argument(
        "--iterations",
        type=int,
        default=scram.MIN_ITERATIONS,
        help=f"PBKDF2 iterations, {scram.MIN_ITERATIONS}..{scram.MAX_ITERATIONS}",
    )
    p_set.add_argument(
        "--password-file", type=Path, help="read the password from the first line of this file"
    )
    p_del = sub.add_parser(
        "delete", parents=[common], help="delete a user's credential (all mechanisms by default)"
    )
    p_del.add_argument("name")
    p_del.add_argument("--mechanism", choices=sorted(scram.MECHANISMS))
    sub.add_parser("list", parents=[common], help="users and their mechanisms")
    return parser


def _first_line(stream: TextIO) -> str:
    line = stream.readline()
    return line[:-1] if line.endswith("\n") else line


def _read_password(file: Path | None, stdin: TextIO) -> str:
    if file is not None:
        with file.open(encoding="utf-8") as f:
            return _first_line(f).removesuffix("\r")
    if stdin.isatty():
        password = getpass.getpass("Password: ")
        if password and getpass.getpass("Password again: ") != password:
            raise ValueError("the passwords differ")
        return password
    return _first_line(stdin).removesuffix("\r")


def main(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Runs one users command; the exit status (0 done, 1 nothing to delete, 2 refused)."""
    args = list(argv)
    # `--data-dir X users ...`: the leading flag belongs to the users command too.
    users_at = args.index("users")
    args = args[users_at + 1 :] + args[:users_at]
    opts = _parser().parse_args(args)
    env = os.environ if environ is None else environ
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = SecurityStore(data_dir(getattr(opts, "data_dir", None), env) / FILE_NAME)
    try:
        if opts.command == "set":
            return _set(store, opts, stdin or sys.stdin)
        if opts.command == "delete":
            return _delete(store, opts.name, opts.mechanism)
        for user, creds in store.credentials().items():
            mechanisms = " ".join(f"{c.mechanism}(iterations={c.iterations})" for c in creds)
            print(f"{user} {mechanisms}")
        return 0
    finally:
        store.close()


def _set(store: SecurityStore, opts: argparse.Namespace, stdin: TextIO) -> int:
    err = user_error(opts.name) or scram.credential_error(opts.mechanism, opts.iterations)
    if err is not None:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    try:
        password = _read_password(opts.password_file, stdin)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"refused: cannot read the password: {exc}", file=sys.stderr)
        return 2
    if not password:
        print("refused: the password is empty", file=sys.stderr)
        return 2
    set_password(store, opts.name, opts.mechanism, password.encode("utf-8"), opts.iterations)
    audit.changed(
        CLI_PRINCIPAL,
        "local",
        "user credential set",
        f"user={opts.name} mechanism={opts.mechanism}",
    )
    print(f"set {opts.mechanism} credential of user {opts.name} ({opts.iterations} iterations)")
    return 0


def _delete(store: SecurityStore, name: str, mechanism: str | None) -> int:
    mechanisms = [mechanism] if mechanism else sorted(scram.MECHANISMS)
    deleted = [m for m in mechanisms if store.delete_credential(name, m)]
    if not deleted:
        print(f"no {mechanism or 'SCRAM'} credential of user {name}", file=sys.stderr)
        return 1
    for m in deleted:
        audit.changed(
            CLI_PRINCIPAL, "local", "user credential deleted", f"user={name} mechanism={m}"
        )
        print(f"deleted {m} credential of user {name}")
    return 0
