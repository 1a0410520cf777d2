"""Hooks for the whole suite. Here rather than in tests/integration/conftest.py because with
pytest-xdist only the controller writes the summary, and it loads the conftest files of the
paths it was given (`tests`), not those of the directories below."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Browser tests skipped for want of Chromium (tests/integration/browser.py) are said
    loudly, never a quiet 's' among thousands; .ci/run installs it."""
    skipped = terminalreporter.stats.get("skipped", [])
    missing = [r for r in skipped if "chromium not found" in str(r.longrepr)]
    if missing:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED: chromium not found", red=True)
        terminalreporter.write_line(
            f"{len(missing)} web console tests did not run. Install Debian's chromium "
            "(apt-get install chromium) or run .ci/run, which installs it.",
            red=True,
        )
