"""The layout by stage holds: no import circles anywhere, `tasks` never reaches `flows` or
`localmodel`, and each package of `tasks` imports only the packages its `__init__` names.

Imports are read from the source (ast), so an import made inside a function counts as much as
one at the top: a circle that only runs lazily is still a circle for a reader.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"flows": "audiobatch.flows", "tasks": "audiobatch.tasks", "localmodel": "audiobatch.localmodel"}
# What each package of tasks/ may import besides itself (its __init__ says the same in words).
# The shared modules import only each other: bounded.py's errors are InputErrors (an item fails).
SHARED = {"errors", "options", "bounded"}
ALLOWED = {
    "audio": set(),
    "inputs": {"audio"},
    "text": {"inputs"},
    "model": {"inputs", "audio", "text"},
    "outputs": {"inputs"},
    "reports": {"outputs"},
    "captions": {"audio", "text"},
    "run": {"inputs", "audio", "text", "model", "outputs"},
    "extract": {"inputs", "model", "outputs", "captions", "run"},
    "speakers": {"captions", "outputs", "run"},
    "transcription": {"inputs", "audio", "model", "outputs", "captions", "run", "extract", "speakers"},
    "narration": {"inputs", "audio", "text", "model", "outputs", "captions", "run"},
    "podcast": {"inputs", "outputs", "captions", "run", "extract"},
}


def module_names() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (`from pkg import module` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found |= submodules or {node.module}  # `from pkg import module` is the module
    return found & modules.keys()


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "tasks" else None


def test_no_module_imports_itself_back_through_others() -> None:
    # Packages' __init__ files import nothing, so a circle here is always between modules.
    assert circles(graph()) == []


def test_tasks_never_reach_flows_or_localmodel() -> None:
    wrong = [(a, b) for a, deps in graph().items() if a.startswith("audiobatch.tasks")
             for b in deps if not b.startswith("audiobatch.tasks")]
    assert wrong == []


def test_each_stage_imports_only_the_stages_its_package_names() -> None:
    wrong = []
    for module, deps in graph().items():
        stage = stage_of(module)
        if stage in SHARED:
            assert not {stage_of(d) for d in deps} - {None} - SHARED, f"{module} must stay a leaf: {deps}"
            continue
        if stage is None:
            continue
        allowed = ALLOWED[stage] | SHARED | {stage}
        wrong += [(module, dep) for dep in deps if stage_of(dep) not in allowed]
    assert wrong == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for stage in ALLOWED:
        doc = ast.get_docstring(ast.parse((ROOT / "tasks" / stage / "__init__.py").read_text())) or ""
        assert "Imports:" in doc, f"tasks/{stage}/__init__.py should say what it may import"
        named = {word.strip(".,") for word in doc.split("Imports:")[1].split()}
        assert ALLOWED[stage] <= named, (stage, ALLOWED[stage] - named)


def test_a_circle_is_found_when_there_is_one() -> None:
    # The checker itself: a two-module loop and a three-module loop are reported, a chain is not.
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"g"}, "g": set()}
    assert sorted(circles(edges)) == [["a", "b"], ["c", "d", "e"]]


def test_every_package_folder_is_installed() -> None:
    """A folder missing from pyproject's packages works in the checkout (editable) and is
    absent from a wheel: `pip install .` would fail at its first import."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            assert ".".join((package, *parts)) in listed, f"{init.parent} is not in pyproject's packages"
