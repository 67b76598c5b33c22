"""The layout of ``shared/``: no import runs upward (README "Layout"), functions stay thin glue."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
FOUNDATION = {"auth", "blobmove", "config", "einvoice", "http", "keys", "metrics", "names", "observability", "secrets",
              "storage"}
#: Each unit (a foundation module, or a package's module) and the units it may import at run time.
LOWER = {
    "foundation": {"foundation"},
    "inqom": {"foundation", "inqom"},
    "ledger": {"foundation", "ledger"},
    "drop.routing": {"foundation"},
    "drop.structured": {"foundation"},
    "services": {"foundation", "inqom", "ledger", "drop.routing"},
    "drop": {"foundation", "inqom", "ledger", "drop", "drop.routing", "drop.structured", "services"},
    "archive": {"foundation", "inqom", "ledger", "drop", "drop.routing", "drop.structured", "archive", "services"},
    "enfact": {"foundation", "ledger", "enfact", "drop.structured", "services"},
}


def unit_of(module: str) -> str:
    """``shared.drop.upload`` → ``drop``; ``shared.drop.routing`` → ``drop.routing`` (and ``drop.structured``,
    the door's invoice terms, which the enFact writer fills in); ``shared.http`` → foundation."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in FOUNDATION:
        return "foundation"
    if parts[0] == "services":
        return "services"
    if parts[:2] in (["drop", "routing"], ["drop", "structured"]):
        return ".".join(parts[:2])
    return parts[0]


def runtime_imports(path: Path) -> set[str]:
    """Modules of ``shared`` imported by ``path``, leaving out those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shared"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("shared"))
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), f"{path}: relative import"
    return found


MODULES = sorted(p for p in SHARED.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SHARED)))
def test_no_import_runs_upward(path):
    module = "shared." + ".".join(path.relative_to(SHARED).with_suffix("").parts)
    unit = unit_of(module)
    upward = {m for m in runtime_imports(path) if m != "shared" and unit_of(m) not in LOWER[unit]}
    assert not upward, f"{module} ({unit}) imports {sorted(upward)}"


def test_every_package_says_what_it_owns_and_may_import():
    for package in (p for p in SHARED.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, package.name
        assert LOWER[package.name], package.name


@pytest.mark.parametrize("path", sorted((ROOT / "functions").glob("*.py")), ids=lambda p: p.name)
def test_function_modules_are_thin_glue(path):
    """Trigger in, one call into shared/: no function module grows logic of its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert sum(isinstance(n, (ast.For, ast.While, ast.Try)) for n in ast.walk(tree)) == 0, path.name
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 40, path.name


def test_the_readme_layout_names_every_module_of_shared():
    """README "Layout" matches the tree: each module is named in its package's row (top-level ones anywhere)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    rows = {line.split("|")[1].strip().strip("`"): line for line in layout.splitlines() if line.startswith("| `")}
    unnamed = []
    for path in MODULES:
        relative = path.relative_to(SHARED)
        if len(relative.parts) == 1:
            named = f"`{path.name}`" in layout or f"`shared/{path.name}`" in layout
        else:
            named = f"`{path.name}`" in rows.get(f"shared/{relative.parts[0]}/", "")
        if not named:
            unnamed.append(str(relative))
    assert not unnamed, f"README Layout does not name: {unnamed}"


#: Issue 20: a class that outgrows one screen of thought is split along its seams (README "Layout").
MAX_CLASS_LINES = 220


def test_no_class_outgrows_one_head():
    too_long = []
    for path in sorted(ROOT.glob("**/*.py")):
        if {".venv", "node_modules"} & set(path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not too_long, too_long
