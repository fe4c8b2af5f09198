"""Copy every results table (results/<name>/TABLE.md, each written by the command it names) into
the README between the markers <!-- <name>-table:begin --> and <!-- <name>-table:end -->.

    python experiments/readme_tables.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mixvae.app.grid import replace_between  # noqa: E402


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    readme = ROOT / "README.md"
    for table in sorted((ROOT / "results").glob("*/TABLE.md")):
        name = table.parent.name
        done = replace_between(readme, f"<!-- {name}-table:begin -->", f"<!-- {name}-table:end -->", table.read_text())
        print(f"{name}: {'copied' if done else 'no markers in README.md'}")


if __name__ == "__main__":
    main()
