"""The layering rule, checked on the source: one import namespace, imports only point down, and no
module-level import circles. See docs/architecture.md ("Layers")."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = ("contract", "board", "firmware", "provisioning", "image")

# What each layer may import from the project besides itself; front ends (below) import anything.
ALLOWED = {
    "contract": set(),
    "board": {"contract"},
    "firmware": {"contract", "board"},
    "provisioning": {"contract"},
    "image": {"contract"},
}
# Front ends: command lines, the demo, developer tools and the boot test drive several products.
FRONT_ENDS = (
    "offhook.firmware.cli",
    "offhook.firmware.demo",
    "offhook.firmware.devtools",
    "offhook.image.cli",
    "offhook.image.boottest",
    "offhook.image.bootcall",
    "offhook.provisioning.cli",
)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in PRODUCTS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, imported name) for every absolute import; relative imports are not used here."""
    tree = ast.parse(path.read_text(), str(path))
    nodes: list[ast.AST]
    if module_level_only:
        nodes = []
        for stmt in tree.body:
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue  # typing-only imports never run
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            nodes.extend(ast.walk(stmt))
    else:
        nodes = list(ast.walk(tree))
    out: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def _is_front_end(module: str) -> bool:
    name = "offhook." + module
    return any(name == f or name.startswith(f + ".") for f in FRONT_ENDS)


def test_project_code_imports_itself_only_through_the_offhook_namespace() -> None:
    bare = []
    for folder in (*PRODUCTS, "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, name in _imports(path, module_level_only=False):
                if name.split(".")[0] in PRODUCTS:
                    bare.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert bare == [], "import these as offhook.<package>:\n" + "\n".join(bare)


def test_imports_only_point_down() -> None:
    upward = []
    for module, path in MODULES.items():
        if _is_front_end(module):
            continue
        layer = module.split(".")[0]
        for line, name in _imports(path, module_level_only=False):
            if not name.startswith("offhook."):
                continue
            target = name.split(".")[1]
            if target != layer and target not in ALLOWED[layer]:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {name}")
    assert upward == [], "\n".join(upward)


def test_no_module_level_import_circles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _line, name in _imports(path, module_level_only=True):
            target = name.removeprefix("offhook.")
            # A module's own parent packages are initialised before it anyway: no circle there.
            ancestor = module.startswith(target + ".")
            if (
                name.startswith("offhook.")
                and target in MODULES
                and target != module
                and not ancestor
            ):
                graph[module].add(target)
    circles = _strongly_connected(graph)
    assert circles == [], "module-level import circles: " + "; ".join(
        " <-> ".join(sorted(c)) for c in circles
    )


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
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
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        "offhook." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in PRODUCTS
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed == on_disk


@pytest.mark.parametrize("name", PRODUCTS)
def test_outside_the_checkout_only_offhook_is_importable(name: str, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, sys\n"
        f"assert importlib.util.find_spec({name!r}) is None, 'bare {name} importable'\n"
        f"assert importlib.util.find_spec('offhook.{name}') is not None\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


# The server's application factory imports its routers (inside create_app); the routers take
# what they need from provisioning.deps, so no import, at any level, leads back to app.py.
SERVER_SHELL = ("provisioning.app", "provisioning.deps", "provisioning.api", "provisioning.web")


def _in_server_shell(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in SERVER_SHELL)


def test_server_routers_and_app_form_no_import_circle_even_inside_functions() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES if _in_server_shell(m)}
    for module in graph:
        for _line, name in _imports(MODULES[module], module_level_only=False):
            target = name.removeprefix("offhook.")
            if target in graph and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    circles = _strongly_connected(graph)
    assert circles == [], "import circles (function-level imports included): " + "; ".join(
        " <-> ".join(sorted(c)) for c in circles
    )
    into_app = sorted(m for m, targets in graph.items() if "provisioning.app" in targets)
    assert into_app == [], f"routers import provisioning.deps, not provisioning.app: {into_app}"
