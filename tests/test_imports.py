"""The package's import structure: no import circle among appliance's modules (imports inside functions count), and
the LAN-facing display server loads no admin-panel code."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import appliance

ROOT = Path(appliance.__file__).resolve().parents[1]  # the tree under test, also for the subprocess


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, from its __init__.py)."""
    out = {}
    for path in (ROOT / "appliance").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file: at module level, in functions, under if."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = set()
    for target in targets:
        while target and target not in known:  # `import appliance.x.y` of a name inside module x: the module x
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle_hidden_in_a_function(tmp_path):
    """On plain data: a module that imports its importer inside a function closes a circle."""
    files = {"appliance.a": "from appliance import b\n", "appliance.b": "def f():\n    from appliance.a import x\n",
             "appliance.c": "import appliance.a\n"}
    known = {}
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
        known[name] = tmp_path / f"{name}.py"
    graph = {name: imported(path, name, known) for name, path in known.items()}
    assert graph == {"appliance.a": {"appliance.b"}, "appliance.b": {"appliance.a"}, "appliance.c": {"appliance.a"}}
    assert cycles(graph) == [["appliance.a", "appliance.b"]]


def test_no_import_circle_in_the_package():
    known = modules()
    assert "appliance.panel.views" in known and "appliance.display.server" in known
    graph = {name: imported(path, name, known) for name, path in known.items()}
    found = cycles(graph)
    assert not found, f"import circles (each a set of modules that import each other): {found}"


def test_display_server_loads_no_panel_code():
    """Strangers on the room LAN reach the display server: the admin panel (Flask app, password store) stays out."""
    code = ("import sys, appliance.display.server\n"
            "print(sorted(m for m in sys.modules if m == 'appliance.panel' or m.startswith('appliance.panel.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"the display server loads panel modules: {proc.stdout.strip()}"
