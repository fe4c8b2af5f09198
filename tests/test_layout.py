"""The shape of the package: the library's core imports nothing of the application (mixvae.app),
and no module names a path outside the repository."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mixvae"
FACADE = {"__init__.py", "__main__.py", "api.py"}   # the public API sits above both


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the mixvae modules a file imports (relative imports resolved)."""
    package = ["mixvae", *path.relative_to(SRC).parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mixvae")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if mod.startswith("mixvae"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def core_files():
    return [p for p in SRC.rglob("*.py")
            if p.relative_to(SRC).parts[0] != "app" and not (p.parent == SRC and p.name in FACADE)]


def test_no_core_module_imports_the_application():
    files = core_files()
    assert len(files) > 20
    offenders = {str(p.relative_to(SRC)): sorted(m for m in imported_modules(p) if m.startswith("mixvae.app"))
                 for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_resolver_sees_application_imports():
    assert "mixvae.app.runs" in imported_modules(SRC / "app" / "grid.py")
    assert "mixvae.training.loop.Trainer" in imported_modules(SRC / "app" / "runs.py")


def test_no_module_names_a_path_outside_the_repository():
    for p in SRC.rglob("*.py"):
        text = p.read_text()
        assert "../shared" not in text and '"shared"' not in text, p
