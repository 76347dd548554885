"""Write docs/functions.md from the function registry (tests/test_functions_cli.py checks it)."""

from __future__ import annotations

from pathlib import Path

from prefect_hcs.processing.catalog import render_markdown

if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "docs" / "functions.md"
    out.write_text(render_markdown())
    print(f"wrote {out}")
