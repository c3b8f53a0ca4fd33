"""The package's shape: every module imports, imports form no cycles, and layers only point down.

Imports are read from the source (every ``import``, also those inside functions and under
``TYPE_CHECKING``), so a cycle that only closes at run time is caught too. Layers, from the
bottom: ``protocol`` and ``runtime.world`` (no networking, nothing of the server), then
``runtime.stream`` (transport: the protocol and ``runtime.metrics`` only), then players,
sessions, the lobby and the app.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "runtime", "bench")
# Optional dependencies (the ``gpu`` extra, Triton); a module needing one is skipped where it is missing.
OPTIONAL = {"gsplat", "triton", "diffusers", "transformers"}


def module_files() -> dict[str, Path]:
    """Every module of the repository's own packages: dotted name -> file."""
    files = {"server": ROOT / "server.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """module -> the repository's modules it imports anywhere in its source."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    # `from package import module` imports the module, else a name of `module`.
                    submodule = f"{module}.{alias.name}"
                    targets.add(submodule if submodule in files else module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def imports_from(graph: dict[str, set[str]], layer: str) -> set[tuple[str, str]]:
    """(importer, imported) for every import made by a module of ``layer``."""
    return {(a, b) for a, targets in graph.items() if a == layer or a.startswith(layer + ".") for b in targets}


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_module_imports():
    for name in sorted(module_files()):
        if name == "server":
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] in OPTIONAL:
                continue
            raise


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_world_imports_only_itself():
    """runtime.world is everything a world is and nothing of the server: no networking, no protocol, no sessions."""
    outside = {(a, b) for a, b in imports_from(import_graph(), "runtime.world") if not within(b, "runtime.world")}
    assert outside == set()


def test_world_parts_depend_one_way():
    """runtime.world's subpackages (its parts) import each other one way only: no cycle between parts."""
    parts: dict[str, set[str]] = {}
    for a, targets in import_graph().items():
        pa = a.split(".")
        if a.startswith("runtime.world.") and len(pa) > 3:  # a module inside a part
            for b in targets:
                pb = b.split(".")
                if b.startswith("runtime.world.") and len(pb) > 3 and pb[2] != pa[2]:
                    parts.setdefault(pa[2], set()).add(pb[2])
                    parts.setdefault(pb[2], set())
    assert cycles(parts) == []


def test_stream_is_transport_only():
    """runtime.stream knows the protocol and the metrics, nothing of players, sessions or worlds."""
    above = {(a, b) for a, b in imports_from(import_graph(), "runtime.stream") if not within(b, "runtime.stream", "runtime.metrics", "protocol")}
    assert above == set()


def test_protocol_imports_nothing_of_the_runtime():
    assert {(a, b) for a, b in imports_from(import_graph(), "protocol") if not within(b, "protocol")} == set()


def test_runtime_never_imports_benches():
    assert {(a, b) for a, b in imports_from(import_graph(), "runtime") if within(b, "bench")} == set()


if __name__ == "__main__":  # print the graph's problems without pytest
    print("cycles:", cycles(import_graph()))
