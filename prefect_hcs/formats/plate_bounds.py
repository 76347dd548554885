"""Wells must lie on the plate: one check shared by the vendor handlers.

A zero-based row, a row or column beyond the plate the metadata declares, or a well like ``Z99``
on a 96-well plate would otherwise reach the writer, which declares whatever grid the wells
span (26 x 99). Each is a compile-time PlateError naming the metadata file and the entry.
"""

from __future__ import annotations

from prefect_hcs.formats.layout import PlateError
from prefect_hcs.formats.wells import well_id

# The largest standard plate (1536 wells): the bound when the metadata declares no geometry.
MAX_ROWS, MAX_COLUMNS = 32, 48


def check_in_plate(
    row: int,
    column: int,
    plate_rows: int | None,
    plate_columns: int | None,
    where: str,
    what: str,
) -> None:
    """PlateError unless 1-based (`row`, `column`) lies on a plate of the declared size.

    Args:
        row: 1-based row number as the metadata gives it.
        column: 1-based column number.
        plate_rows: Rows the metadata declares (None: up to a 1536-well plate's 32).
        plate_columns: Columns the metadata declares (None: up to 48).
        where: The metadata file, for the message.
        what: The entry (e.g. ``<Image> 0101K1F1P1R1``), for the message.
    """
    if row < 1 or column < 1:
        raise PlateError(
            f"{where}: {what} has row {row}, column {column}; rows and columns count from 1 "
            "(a zero-based index?). Re-export the plate from the instrument software."
        )
    rows = plate_rows or MAX_ROWS
    columns = plate_columns or MAX_COLUMNS
    if row > rows or column > columns:
        declared = "declares" if plate_rows and plate_columns else "allows at most (1536 wells)"
        raise PlateError(
            f"{where}: {what} is well {well_id(row - 1, column - 1)} (row {row}, column {column}), "
            f"outside the plate: the metadata {declared} {rows} rows x {columns} columns. "
            "Fix the plate metadata or re-export the plate."
        )
