"""`python -m app` / `chronik`: parse settings and run the service; `python -m app users ...`
manages SCRAM users (app.security.cli)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import load_settings
from .security import cli


def _raise_open_file_limit() -> None:
    """Every partition keeps its active WAL segment open, so the partitions a broker can hold
    follow the open-file limit: take the hard limit, as the JVM does for Kafka."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if cli.is_cli(args):
        sys.exit(cli.main(args))
    settings = load_settings(args)
    # Imported only for the server: the users CLI should not load the whole service.
    from .service import serve

    _raise_open_file_limit()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    runner: Callable[..., Any]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(settings))


if __name__ == "__main__":
    main()
