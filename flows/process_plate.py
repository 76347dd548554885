"""Deployment entrypoint: `flows/process_plate.py:process_plate`.

The flow itself lives in `prefect_hcs.runtime.flow` so it can be imported as a library; this file
is what `prefect.yaml` and `prefect deploy` point at.
"""

from prefect_hcs.runtime.flow import process_plate

__all__ = ["process_plate"]

if __name__ == "__main__":  # pragma: no cover - `python flows/process_plate.py PLATE`
    import sys

    process_plate(plate=sys.argv[1])
