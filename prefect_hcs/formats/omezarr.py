"""OME-Zarr HCS plates (NGFF 0.5, Zarr v3): the public names, from the modules that do each job.

* `omezarr_store`   — well/field paths inside a plate and the zarr store for a URL;
* `omezarr_pyramid` — pyramid levels and per-image NGFF metadata (axes, transforms, rendering);
* `omezarr_writer`  — `OmeZarrPlateWriter` (initialize → write_field per field → finalize);
* `omezarr_reader`  — `read_well_image`;
* `validate_zarr`   — the four-way validator (yaozarrs, ome-zarr-models, ome-zarr-py, ours).

Import from here unless you need a module's other names. Knows nothing of Prefect.
"""

from __future__ import annotations

from prefect_hcs.formats.omezarr_pyramid import downsample2, pyramid_shapes
from prefect_hcs.formats.omezarr_reader import read_well_image
from prefect_hcs.formats.omezarr_store import (
    AXES,
    MARK,
    NGFF_VERSION,
    WellName,
    field_path,
    open_store,
    parse_well,
    read_plate_attrs,
)
from prefect_hcs.formats.omezarr_writer import (
    IncompleteOutputError,
    OmeZarrPlateWriter,
    OutputExistsError,
)

__all__ = [
    "AXES",
    "MARK",
    "NGFF_VERSION",
    "IncompleteOutputError",
    "OmeZarrPlateWriter",
    "OutputExistsError",
    "WellName",
    "downsample2",
    "field_path",
    "open_store",
    "parse_well",
    "pyramid_shapes",
    "read_plate_attrs",
    "read_well_image",
]
