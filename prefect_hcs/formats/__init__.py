"""Microscope formats: discover a plate's layout through any fsspec filesystem, read its planes.

Knows nothing of Prefect. `open_plate` auto-detects ImageXpress (.HTD), Opera Phenix / Operetta
(Harmony Index.idx.xml / Index.xml) and Yokogawa CellVoyager (MeasurementData.mlf) plates;
`make_plate` and `generators.make_any_plate` write synthetic ones.
"""

from prefect_hcs.formats.cellvoyager import open_cellvoyager
from prefect_hcs.formats.detect import (
    detect_format,
    open_plate,
    read_plane,
    read_tiff,
    read_tiff_header,
)
from prefect_hcs.formats.imagexpress import open_imagexpress
from prefect_hcs.formats.layout import (
    ImageRef,
    PlateError,
    PlateFormat,
    PlateLayout,
)
from prefect_hcs.formats.phenix import open_phenix
from prefect_hcs.formats.synthetic import make_plate, phenix_field_order, site_grid
from prefect_hcs.formats.wells import WellId, WellIdError, split_well, well_id

__all__ = [
    "ImageRef",
    "PlateError",
    "PlateFormat",
    "PlateLayout",
    "WellId",
    "WellIdError",
    "detect_format",
    "make_plate",
    "open_cellvoyager",
    "open_imagexpress",
    "open_phenix",
    "open_plate",
    "phenix_field_order",
    "read_plane",
    "read_tiff",
    "read_tiff_header",
    "site_grid",
    "split_well",
    "well_id",
]
