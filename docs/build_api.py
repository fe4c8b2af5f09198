"""Build the library's API reference (HTML, with pdoc) and fail on any warning.

    python docs/build_api.py [OUT]        # default OUT: docs/api (not committed)

Every module of the package is documented except the application (``mixvae.app``, the command
line and run folders) and ``mixvae.__main__``. A warning of pdoc or of mixvae while importing or
rendering (an unimportable module, an annotation that does not parse, a docstring that cannot be
processed) is printed on stderr and the exit status is 1; deprecation warnings that other packages
raise on import are not about these docs and are left out.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXCLUDED = ("mixvae.app", "mixvae.__main__")


def library_modules() -> list[str]:
    """The names of mixvae and of every module under it, the application excluded."""
    import mixvae
    names = ["mixvae"] + [m.name for m in pkgutil.walk_packages(mixvae.__path__, "mixvae.")]
    return [n for n in names if not any(n == e or n.startswith(e + ".") for e in EXCLUDED)]


def _specs(modules: list[str]) -> list[str]:
    """pdoc's module specifications for ``modules``: pdoc walks into the submodules of a package
    except where its ``__all__`` leaves them out, so only those (and the top) are named; the
    application is excluded by pattern in case a package lists it."""
    specs = []
    for name in modules:
        parent, _, leaf = name.rpartition(".")
        if not parent or leaf not in getattr(importlib.import_module(parent), "__all__", [leaf]):
            specs.append(name)
    return specs + ["!" + e.replace(".", r"\.") + r"(\..*)?$" for e in EXCLUDED]


def _ours(w: warnings.WarningMessage) -> bool:
    if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
        return True
    path = Path(w.filename).as_posix()
    return "/mixvae/" in path or "/pdoc/" in path


def build(out: Path) -> list[str]:
    """Write the HTML reference into ``out``; returns the warnings (empty when clean)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import pdoc
        import pdoc.render
        modules = library_modules()
        for name in modules:
            importlib.import_module(name)
        pdoc.render.configure(docformat="restructuredtext", show_source=False)
        pdoc.pdoc(*_specs(modules), output_directory=Path(out))
    return [f"{Path(w.filename).name}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught if _ours(w)]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "api"
    problems = build(out)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} warning(s); the API reference is not clean", file=sys.stderr)
        return 1
    print(f"docs: API reference of {len(library_modules())} modules in {out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
