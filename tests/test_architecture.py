"""The import rules of ARCHITECTURE.md, checked: each package imports only the packages above it, and no two
modules import each other at load time (an import cycle)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from conftest import ROOT

# ARCHITECTURE.md, "Packages and what they may import"; errors.py, progress.py and version.py (the leaf that holds
# __version__) may be imported by everyone.
MAY_IMPORT = {
    "data": set(),
    "encoder": set(),
    "heads": set(),
    "meta": {"data", "encoder", "heads"},
    "model": {"data", "encoder", "heads", "meta"},
    "bench": {"data", "encoder", "heads", "meta", "model"},
    "serve": {"model"},
    "cli": {"data", "encoder", "heads", "meta", "model", "bench", "serve"},
}
EVERYONE = {"errors", "progress", "version"}


def _modules() -> dict[str, Path]:
    files = {
        f: "fewintent." + ".".join(f.relative_to(ROOT / "fewintent").with_suffix("").parts)
        for f in (ROOT / "fewintent").rglob("*.py")
    }
    files.update({f: "fewintent.cli." + f.stem for f in (ROOT / "cli").glob("*.py")})
    return {name.removesuffix(".__init__"): f for f, name in files.items()}


def _imports(path: Path, *, load_time_only: bool) -> set[str]:
    """fewintent modules imported by ``path``: every import, or only those run when the module loads (not inside
    functions or ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    nodes = _top_level(tree.body) if load_time_only else ast.walk(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fewintent"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("fewintent"))
    return out


def _top_level(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Statements that run at import time: the module body, without function/class bodies' lazy imports and
    without ``if TYPE_CHECKING:`` blocks."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        if isinstance(stmt, ast.ClassDef):
            yield from _top_level([s for s in stmt.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))])
            continue
        yield from ast.walk(stmt)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else ""


def test_packages_import_only_the_layers_above_them() -> None:
    wrong = []
    for module, path in _modules().items():
        pkg = _package(module)
        if pkg not in MAY_IMPORT:
            continue
        for target in _imports(path, load_time_only=False):
            other = target.split(".")[1] if target.count(".") >= 1 else ""
            if other and other != pkg and other not in MAY_IMPORT[pkg] | EVERYONE:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that point down the layers (see ARCHITECTURE.md):\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules() -> None:
    modules = _modules()
    graph = {m: {t for t in _imports(p, load_time_only=True) if t in modules and t != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle that matters: drop parent -> child edges
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_classifier_imports_no_training_stack():
    """Deciding needs numpy only: the trainer (model/adapting.py) is where torch, transformers and peft come in."""
    tree = ast.parse((ROOT / "fewintent" / "model" / "classifier.py").read_text())
    heavy = {"torch", "transformers", "peft", "sentence_transformers"}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    assert not found & heavy


def _mentioned(text: str) -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", text))


def test_every_path_and_name_architecture_md_mentions_exists():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    sources = [*(ROOT / "fewintent").rglob("*.py"), *(ROOT / "cli").glob("*.py"), *(ROOT / "tests").glob("*.py")]
    defined = set()
    for f in sources:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined.update(t.id for t in targets if isinstance(t, ast.Name))
                defined.update(t.attr for t in targets if isinstance(t, ast.Attribute))
    files = [f.relative_to(ROOT).as_posix() for f in ROOT.rglob("*.py") if ".venv" not in f.parts]
    missing = []
    for token in _mentioned(text):
        name = token.split("(")[0].rstrip(",.:")
        if re.fullmatch(r"[\w./-]+\.py", name):  # a module, named from its package on: some file ends so
            if not any(f == name or f.endswith("/" + name) for f in files):
                missing.append(name)
        elif re.fullmatch(r"(?:\w+\.)*[A-Za-z_]\w*", name) and ("_" in name or re.search(r"[a-z][A-Z]", name)):
            last = name.split(".")[-1]
            if not last.isupper() and last not in defined and not (ROOT / "fewintent" / last).exists():
                missing.append(name)
    assert not missing, "ARCHITECTURE.md names what does not exist: " + ", ".join(sorted(missing))


def test_no_module_reaches_into_another_modules_private_members():
    """A private member (``_name``) of one of our classes is used through ``self`` / ``cls`` in its own module only:
    other modules go through the public API (e.g. ``clf.encode``, not ``clf._encode``)."""
    modules = _modules()
    owners: dict[str, set[str]] = {}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in ast.walk(node):
                    name = None
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        name = item.name
                    elif isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name):
                        name = item.attr if item.value.id in ("self", "cls") else None
                    if name and name.startswith("_") and not name.startswith("__"):
                        owners.setdefault(name, set()).add(module)
    wrong = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or node.attr not in owners or module in owners[node.attr]:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            wrong.append(
                f"{module}:{node.lineno} reads .{node.attr} (defined in {', '.join(sorted(owners[node.attr]))})"
            )
    assert not wrong, "private members used from another module:\n" + "\n".join(wrong)
