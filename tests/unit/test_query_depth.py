"""A deeply nested query is refused before Tantivy's recursive parser sees it: at about 20,000
nested groups that parser overflows the caller's stack and the whole service dies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.storage.search.execute import MAX_QUERY_DEPTH, check_query


def test_deep_nesting_is_a_clear_error_not_a_crash() -> None:
    # In a child process: before the bound, this killed the interpreter with SIGSEGV.
    code = (
        "from app.storage.search.execute import check_query\n"
        "q = '(' * 30000 + 'a' + ')' * 30000\n"
        "try:\n"
        "    check_query(q)\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "refused: query nests 30000 parentheses deep" in proc.stdout


def test_nesting_at_the_bound_parses_and_quoted_parentheses_do_not_count() -> None:
    check_query("(" * MAX_QUERY_DEPTH + "a" + ")" * MAX_QUERY_DEPTH)
    check_query('"' + "(" * 500 + '"')
    with pytest.raises(ValueError, match="parentheses deep"):
        check_query("(" * (MAX_QUERY_DEPTH + 1) + "a" + ")" * (MAX_QUERY_DEPTH + 1))
