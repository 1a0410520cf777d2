"""The import graph of app/: storage layers import one way, through each layer's face, storage
never imports broker, api or security, security never imports broker or api, and no module
imports itself through a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

# What each storage layer may import besides itself and the shared modules.
ALLOWED: dict[str, set[str]] = {
    "log": set(),
    "segments": {"log"},
    "index": {"log", "segments"},
    "tier": {"log", "segments"},
    "search": {"log", "segments", "tier", "index"},
    "clean": {"log", "segments", "tier", "index"},
}
SHARED = {
    "app.storage.errors",
    "app.storage.metrics",
    "app.storage.fileutil",
    "app.storage.process",
}
OUTSIDE_STORAGE = ("app.broker", "app.api", "app.service", "app.__main__", "app.security")
OUTSIDE_SECURITY = ("app.broker", "app.api", "app.service", "app.__main__")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """Every module `path` imports, wherever the import is (TYPE_CHECKING blocks and function
    bodies included): `from a.b import c` names a.b.c when that is a module, else a.b."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in modules else base)
    return {m for m in out if m == "app" or m.startswith("app.")}


def graph(root: Path) -> dict[str, set[str]]:
    paths = {module_name(root, p): p for p in root.rglob("*.py")}
    modules = set(paths)
    return {m: imports_of(root, p, modules) for m, p in paths.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["app", "storage"] and parts[2] in ALLOWED:
        return parts[2]
    return None


def violations(root: Path) -> list[str]:
    found: list[str] = []
    for module, targets in sorted(graph(root).items()):
        own = layer_of(module)
        for target in sorted(targets):
            other = layer_of(target)
            if module.startswith("app.storage") and target.startswith(OUTSIDE_STORAGE):
                found.append(
                    f"{module} imports {target}: storage never imports broker, api or security"
                )
            if module.startswith("app.security") and target.startswith(OUTSIDE_SECURITY):
                found.append(f"{module} imports {target}: security never imports broker or api")
            if own is not None:
                if target in ("app.storage", "app.storage.store"):
                    found.append(f"{module} imports the storage facade {target}")
                elif other is not None and other != own:
                    if other not in ALLOWED[own]:
                        found.append(f"{module} ({own}) must not import {target} ({other})")
                    elif target != f"app.storage.{other}":
                        found.append(f"{module} imports {target}, not the face app.storage.{other}")
            if (
                not module.startswith("app.storage")
                and other is not None
                and target != f"app.storage.{other}"
            ):
                found.append(f"{module} imports storage internals {target}; use app.storage")
    return found


def cycles(root: Path) -> list[list[str]]:
    edges = graph(root)
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if t not in edges:
                continue
            if state.get(t) == 1:
                found.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_layers_import_one_way_through_their_faces() -> None:
    assert violations(APP) == []


def test_no_import_cycle() -> None:
    assert cycles(APP) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "app"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"storage/log/wal.py": "from app.storage.index import Indexer\n"},
            "app.storage.log.wal (log) must not import app.storage.index (index)",
        ),
        (
            {
                "storage/index/w.py": "from app.storage.log.wal import Wal\n",
                "storage/log/wal.py": "",
            },
            "app.storage.index.w imports app.storage.log.wal, not the face app.storage.log",
        ),
        (
            {"storage/clean/c.py": "from app.storage.search import SearchEngine\n"},
            "app.storage.clean.c (clean) must not import app.storage.search (search)",
        ),
        (
            {"storage/tier/t.py": "from ...broker import server\n", "broker/server.py": ""},
            "app.storage.tier.t imports app.broker.server: storage never imports broker, api "
            "or security",
        ),
        (
            {"storage/log/l.py": "from app.security import Security\n"},
            "app.storage.log.l imports app.security: storage never imports broker, api or security",
        ),
        (
            {
                "security/acl.py": "from app.broker.protocol import codec\n",
                "broker/protocol/codec.py": "",
            },
            "app.security.acl imports app.broker.protocol.codec: security never imports broker "
            "or api",
        ),
        (
            {
                "api/s.py": "from app.storage.search.engine import Hit\n",
                "storage/search/engine.py": "",
            },
            "app.api.s imports storage internals app.storage.search.engine; use app.storage",
        ),
    ],
)
def test_a_forbidden_import_is_reported(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    assert expected in violations(_tree(tmp_path, files))


def test_a_cycle_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "broker/broker.py": "from app.broker.handlers import base\n",
            "broker/handlers/base.py": "from app.broker.broker import Broker\n",
        },
    )
    assert cycles(root) == [["app.broker.broker", "app.broker.handlers.base", "app.broker.broker"]]
