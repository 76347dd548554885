"""Microscope formats: discover a plate's layout through any fsspec filesystem, read its planes.

Knows nothing of Prefect. `open_plate` auto-detects ImageXpress (.HTD), Opera Phenix / Operetta
(Harmony Index.idx.xml / Index.xml) and Yokogawa CellVoyager (MeasurementData.mlf) plates. Each
vendor module registers its `handlers.PlateHandler` when imported, and this package imports them
all, first thing and in a fixed order (ImageXpress, Phenix, CellVoyager: it breaks ties when a
folder holds two vendors' metadata), so `detect`/`open_plate` see every vendor. Synthetic plates for tests and the demo are made
by `prefect_hcs.testing` (`synthetic.make_plate`, `generators.make_any_plate`).
"""

# isort: off
from prefect_hcs.formats.imagexpress import open_imagexpress
from prefect_hcs.formats.phenix import open_phenix
from prefect_hcs.formats.cellvoyager import open_cellvoyager

# isort: on
from prefect_hcs.formats.detect import (
    detect_format,
    open_plate,
    read_plane,
    read_tiff,
    read_tiff_header,
)
from prefect_hcs.formats.layout import (
    ImageRef,
    PlateError,
    PlateFormat,
    PlateLayout,
)
from prefect_hcs.formats.wells import WellId, WellIdError, split_well, well_id

__all__ = [
    "ImageRef",
    "PlateError",
    "PlateFormat",
    "PlateLayout",
    "WellId",
    "WellIdError",
    "detect_format",
    "open_cellvoyager",
    "open_imagexpress",
    "open_phenix",
    "open_plate",
    "read_plane",
    "read_tiff",
    "read_tiff_header",
    "split_well",
    "well_id",
]
