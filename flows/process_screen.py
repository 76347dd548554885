"""Deployment entrypoint: `flows/process_screen.py:process_screen`.

The flow lives in `prefect_hcs.runtime.screen` (importable as a library); `prefect.yaml` points
here. One `process-plate` deployment run per plate; the screen fails if any plate failed.
"""

from prefect_hcs.runtime.screen import process_screen

__all__ = ["process_screen"]

if __name__ == "__main__":  # pragma: no cover - `python flows/process_screen.py PLATE...`
    import sys

    process_screen(plates=sys.argv[1:])
