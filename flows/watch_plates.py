"""Deployment entrypoint: `flows/watch_plates.py:watch_plates`.

The flow lives in `prefect_hcs.runtime.watch`; `prefect.yaml` schedules it (cron) to start one
`process-plate` run per complete plate found in a folder.
"""

from prefect_hcs.runtime.watch import watch_plates

__all__ = ["watch_plates"]

if __name__ == "__main__":  # pragma: no cover - `python flows/watch_plates.py FOLDER`
    import sys

    watch_plates(folder=sys.argv[1])
