"""The module graph: every module imports alone, the imports form no cycle, and nothing
reaches up to the command line or the package ``__init__``.

The graph is read from the source (``ast``), so imports inside functions count: a cycle closed
by a lazy import still ties the two modules together, it only moves the failure to run time.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from multiprocessing.pool import ThreadPool
from pathlib import Path

import pytest

PACKAGE = "bddseg"
SOURCE = Path(importlib.util.find_spec(PACKAGE).origin).parent
MODULES = sorted(
    PACKAGE if p.stem == "__init__" else f"{PACKAGE}.{p.stem}" for p in SOURCE.glob("*.py")
)
TOP = {"bddseg", "bddseg.cli"}  # what no other module may import
NATIVE = {f"{PACKAGE}.{p.stem}" for p in SOURCE.glob("*.c")}  # C extensions: they import nothing


def module_path(module: str) -> Path:
    name = "__init__" if module == PACKAGE else module.rpartition(".")[2]
    return SOURCE / f"{name}.py"


def imports_of(source: str, module: str, known: set[str] | frozenset[str]) -> set[str]:
    """The ``bddseg`` modules that ``source`` (the text of ``module``) imports, at any level
    (inside functions too); relative imports resolved. ``from bddseg import x`` is an import
    of ``bddseg.x`` when that is a module in ``known``, else of the package ``bddseg``; the C
    extensions (:data:`NATIVE`) are leaves, left out."""
    package = module if module == PACKAGE else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.partition(".")[0] == PACKAGE}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        if base == PACKAGE:
            for a in node.names:
                sub = f"{PACKAGE}.{a.name}"
                if sub not in NATIVE:
                    found.add(sub if sub in known else PACKAGE)
        elif base.partition(".")[0] == PACKAGE:
            found.add(base)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    known = frozenset(MODULES)
    return {m: imports_of(module_path(m).read_text(encoding="utf-8"), m, known) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# ---------------------------------------------------------------- the checker itself
def test_the_checker_sees_lazy_relative_and_package_imports():
    known = frozenset({"bddseg", "bddseg.data", "bddseg.stats", "bddseg.cli"})
    source = """
import os
import bddseg.cli
from bddseg import __version__, stats
from .data import x

def later():
    from bddseg.stats import compute_stats
    from . import data
"""
    found = imports_of(source, "bddseg.model", known)
    assert found == {"bddseg", "bddseg.cli", "bddseg.data", "bddseg.stats"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


# ---------------------------------------------------------------- the package
def test_the_module_graph_has_no_cycle():
    graph = import_graph()
    assert {"bddseg.data", "bddseg.stats", "bddseg.predict"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "module",
    [m for m in MODULES if m != PACKAGE],
)
def test_nothing_reaches_up_to_the_cli_or_the_package(module):
    """The CLI and the package ``__init__`` sit on top: a module that imports them (for
    ``__version__``: use ``bddseg._version``) depends on everything they import."""
    up = imports_of(module_path(module).read_text(encoding="utf-8"), module, set(MODULES)) & TOP
    up.discard(module)
    assert not up, f"{module} imports {', '.join(sorted(up))}"


# Runs in a fresh interpreter: imports the third-party libraries the package imports at module
# level, then forks one child per bddseg module, which imports that module alone (no bddseg
# module is loaded before the fork) and reports the traceback, if any. Importing torch once
# instead of 30 times keeps this at a few seconds on 2 busy cores instead of about a minute.
FORK_IMPORTS = """
import importlib, json, os, sys, traceback

preload, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:  # the child's own import of it fails again and says why
        pass
loaded = sorted(m for m in sys.modules if m == "bddseg" or m.startswith("bddseg."))
assert not loaded, f"preloading imported {loaded}"
children = []
for module in modules:
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            message = ""
        except BaseException:
            message = traceback.format_exc() or "failed"
        with os.fdopen(write, "w") as out:
            out.write(message)
        os._exit(0)
    os.close(write)
    children.append((module, pid, read))
results = {}
for module, pid, read in children:
    with os.fdopen(read) as f:
        message = f.read()
    _, status = os.waitpid(pid, 0)
    results[module] = message if status == 0 else message or f"child exited with {status}"
print(json.dumps(results))
"""


def module_level_imports(tree: ast.Module) -> set[str]:
    """The modules a file imports when it is imported (not those inside functions)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return names


def third_party_preload() -> list[str]:
    names: set[str] = set()
    for m in MODULES:
        names |= module_level_imports(ast.parse(module_path(m).read_text(encoding="utf-8")))
    local = set(sys.stdlib_module_names) | {PACKAGE, "__future__"}
    return sorted(n for n in names if n.partition(".")[0] not in local)


@pytest.fixture(scope="module")
def fresh_imports() -> dict[str, str]:
    """``{module: traceback}`` (empty on success) of importing each module alone, with no
    other bddseg module loaded: forked from one fresh interpreter (:data:`FORK_IMPORTS`), or
    ``python -c "import MODULE"`` per module where there is no fork."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if hasattr(os, "fork"):
        args = [json.dumps(third_party_preload()), json.dumps(MODULES)]
        done = subprocess.run(
            [sys.executable, "-c", FORK_IMPORTS, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def run(module: str) -> str:
        cmd = [sys.executable, "-c", f"import {module}"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        return "" if done.returncode == 0 else done.stderr or f"exit {done.returncode}"

    with ThreadPool(min(len(MODULES), 2 * (os.cpu_count() or 1))) as pool:
        return dict(zip(MODULES, pool.map(run, MODULES), strict=True))


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(fresh_imports, module):
    error = fresh_imports[module]
    assert not error, f"import {module} alone failed:\n{error[-3000:]}"


def test_a_cycle_fails_the_fresh_import(tmp_path):
    """The fork runner sees what a fresh ``python -c "import a"`` sees: here ``a`` and ``b``
    import each other at module level, so importing ``a`` first fails."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from cyc.a import A\nB = 2\n")
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    done = subprocess.run(
        [sys.executable, "-c", FORK_IMPORTS, "[]", json.dumps(["cyc.a", "cyc.b", "json"])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert "ImportError" in results["cyc.a"] and "partially initialized" in results["cyc.a"]
    assert "ImportError" in results["cyc.b"] and results["json"] == ""
