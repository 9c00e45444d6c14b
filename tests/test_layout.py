"""The layout: one folder per stage, no import cycles, and built-in mappings that install from the
top-level ``mappings/`` as ``tf2pt.mappings``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: where each of tf2pt's packages lives in the source tree
PACKAGE_DIRS = {"tf2pt": ROOT / "tf2pt", "tf2pt.mappings": ROOT / "mappings"}


def own_modules() -> Dict[str, Path]:
    """Every module of tf2pt (``tf2pt.read.bundle`` -> its file), the built-in mappings included."""
    out = {}
    for package, base in PACKAGE_DIRS.items():
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, known: Set[str]) -> Set[str]:
    """The modules of ``known`` that ``module`` imports anywhere (functions included: a lazy
    import is still a dependency), except under ``if TYPE_CHECKING``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: Set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in known else target)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in known and m != module}


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(cycles)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": {"g"}, "g": {"f"}}
    assert import_cycles(graph) == [["a", "b", "c"], ["f", "g"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_and_relative_imports_count(tmp_path):
    known = {"tf2pt.x", "tf2pt.y", "tf2pt.z", "tf2pt.read", "tf2pt.read.base"}
    path = tmp_path / "x.py"
    path.write_text("from .y import thing\n"
                    "def f():\n    from .read import base\n"
                    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import z\n")
    assert imports_of("tf2pt.x", path, known) == {"tf2pt.y", "tf2pt.read.base"}


def test_no_import_cycles_among_tf2pts_modules():
    modules = own_modules()
    graph = {m: imports_of(m, p, set(modules)) for m, p in modules.items()}
    assert sum(len(v) for v in graph.values()) > 50  # the graph is really read
    assert import_cycles(graph) == []


def test_each_stage_has_its_folder():
    modules = own_modules()
    for stage in ("tf2pt.read", "tf2pt.write", "tf2pt.verify", "tf2pt.models", "tf2pt.nn", "tf2pt.mappings"):
        assert stage in modules and any(m.startswith(stage + ".") for m in modules), stage
    tracked = subprocess.run(["git", "ls-files", "mappings"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if tracked:  # a git checkout (not an unpacked sdist)
        assert {"mappings/highresnet.py", "mappings/deepbrain.py"} <= set(tracked)
    assert not (ROOT / "tf2pt" / "mappings").exists()


@pytest.mark.slow
def test_a_built_wheel_carries_the_mappings_as_tf2pt_mappings(tmp_path):
    """``pip wheel .`` (not editable): the wheel holds tf2pt/mappings/*.py, and ``tf2pt mappings``
    run from the unpacked wheel alone lists the built-ins, imported from the wheel."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(ROOT)], capture_output=True, text=True)
    if build.returncode != 0 and "Could not find a version" in build.stderr + build.stdout:
        pytest.skip("no package index to fetch the build backend from")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("tf2pt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    assert {"tf2pt/mappings/__init__.py", "tf2pt/mappings/highresnet.py", "tf2pt/mappings/deepbrain.py",
            "tf2pt/read/bundle.py", "tf2pt/write/safetensors.py", "tf2pt/verify/run.py", "tf2pt/nn/same.py"} <= names
    assert not any(n.startswith("mappings/") for n in names)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    code = ("import sys, tf2pt.mappings\n"
            "from tf2pt.cli import main\n"
            "sys.stderr.write(tf2pt.mappings.__file__ + '\\n')\n"
            "main(['mappings'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0].startswith(str(tmp_path / "site"))
    listed = [line.split(":")[0] for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert {"highresnet", "deepbrain"} <= set(listed)
