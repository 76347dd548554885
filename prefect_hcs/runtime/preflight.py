"""Checks of a compiled plan that need to look at files (a few reads, no pixels).

Run by `compile_from_parameters`, so `prefect-hcs plan` and the flow's compile task both refuse:

* a plate whose sampled TIFF headers disagree (a header claiming 100000×100000 among 512²
  planes), see `prefect_hcs.formats.geometry`;
* an output location that is a file, or lies under a file (``global_output_folder`` pointing at
  a file): the run would only fail when the first well is written.
"""

from __future__ import annotations

import posixpath
from typing import Any

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.pipeline.plan import PlatePlan


def output_problems(plan: PlatePlan, storage_options: dict[str, Any] | None) -> list[str]:
    """Problems with the output location of a compiled plan; [] when all is well."""
    if plan.output.root_backend == "omero":
        return []
    return _output_location_problems(plan.output.root, storage_options)


def header_problems(layout: PlateLayout, storage_options: dict[str, Any] | None) -> list[str]:
    """Sampled TIFF headers that disagree with the plate's other planes (names each file)."""
    if layout.format == "omero" or not layout.images:
        return []
    from prefect_hcs.formats.detect import resolve
    from prefect_hcs.formats.geometry import header_sample_problems

    fs, _ = resolve(layout.url, storage_options)
    return header_sample_problems(fs, layout.images)


def _output_location_problems(root: str, storage_options: dict[str, Any] | None) -> list[str]:
    from prefect_hcs.runtime.io import fs_for

    fs, path = fs_for(root, storage_options)
    current = path.rstrip("/")
    while current and current not in ("/", "."):
        try:
            if fs.isfile(current):
                return [
                    f"the output location {root} cannot be created: {current} is a file, not a "
                    "folder. Move the file away, or set path_planning_config.global_output_folder "
                    "(or output_dir_suffix) to a folder"
                ]
            if fs.isdir(current):
                return []
        except (OSError, ValueError):
            return []  # unreachable or unknown: the writer reports it with its own message
        parent = posixpath.dirname(current)
        if parent == current:
            break
        current = parent
    return []
