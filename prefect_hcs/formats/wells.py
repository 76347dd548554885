"""`WellId`: the one place a well name is parsed and printed.

Every vendor, the OME-Zarr writer, the OMERO paths, the well filters and the CLI name wells the
same way: a row (``A``..``Z``, ``AA``..) and a 1-based column. The canonical printed form is the
row letters and a two-digit column (``B03``, ``AF48`` on a 1536-well plate); NGFF paths use the
unpadded column (``B/3``); Opera Phenix writes ``R02C03``. Everything else (``b3``, ``B/03``,
``B_3``) is accepted on input and printed canonically.

Sites and channels stay plain 1-based integers: they have one spelling everywhere, so a type
would add ceremony without removing a grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from prefect_hcs.errors import UserFacingError

__all__ = ["WellId", "WellIdError", "row_name", "split_well", "well_id"]

#: Row letters, an optional separator, a 1-based column: 'B03', 'b3', 'B/3', 'B_03', 'AA12'.
_LETTERS = re.compile(r"([A-Za-z]{1,2})\s*[/_-]?\s*0*(\d{1,3})")
#: Opera Phenix: 'R02C03' (1-based row and column).
_PHENIX = re.compile(r"[Rr]0*(\d{1,3})[Cc]0*(\d{1,3})")
_HELP = "expected a row letter and a column, e.g. 'B03', 'b3', 'B/3', or the Phenix form 'R02C03'"


class WellIdError(UserFacingError, ValueError):
    """A well name that fits none of the accepted forms (the message says which are)."""


@dataclass(frozen=True, order=True, slots=True)
class WellId:
    """A well of a plate: 0-based row and column, ordered by row then column.

    Examples:
        >>> WellId.parse("b3").name
        'B03'
        >>> WellId.parse("R02C03") == WellId(1, 2)
        True
        >>> WellId(26, 0).name
        'AA01'
    """

    row_index: int
    column_index: int

    def __post_init__(self) -> None:
        if self.row_index < 0 or self.column_index < 0:
            raise WellIdError(
                f"well row and column indices must be >= 0, got "
                f"({self.row_index}, {self.column_index})"
            )

    @classmethod
    def parse(cls, text: str) -> WellId:
        """The well `text` names, in any accepted form.

        Raises:
            WellIdError: `text` is not a well name (one line naming the accepted forms).
        """
        if not isinstance(text, str):
            raise WellIdError(f"not a well id: {text!r} ({_HELP})")
        return _parse(text)

    @property
    def row_letter(self) -> str:
        """Row letters: 'A' for row 0, 'Z' for 25, 'AA' for 26."""
        return row_name(self.row_index)

    @property
    def column(self) -> int:
        """1-based column number."""
        return self.column_index + 1

    @property
    def name(self) -> str:
        """Canonical name: row letters and a two-digit column ('B03')."""
        return f"{self.row_letter}{self.column:02d}"

    @property
    def phenix_name(self) -> str:
        """Opera Phenix name: 'R02C03'."""
        return f"R{self.row_index + 1:02d}C{self.column:02d}"

    @property
    def ngff_path(self) -> str:
        """Path of the well group inside an OME-Zarr plate: 'B/3' (unpadded column)."""
        return f"{self.row_letter}/{self.column}"

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=8192)
def _parse(text: str) -> WellId:
    stripped = text.strip()
    if m := _LETTERS.fullmatch(stripped):
        letters, col = m.groups()
        row = 0
        for ch in letters.upper():
            row = row * 26 + (ord(ch) - 64)
        return _checked(text, row, int(col))
    if m := _PHENIX.fullmatch(stripped):
        return _checked(text, int(m.group(1)), int(m.group(2)))
    raise WellIdError(f"not a well id: {text!r} ({_HELP})")


def _checked(text: str, row: int, column: int) -> WellId:
    """The well of 1-based `row` and `column`, refusing 0 (rows and columns start at 1)."""
    if row < 1 or column < 1:
        raise WellIdError(f"not a well id: {text!r} (rows and columns start at 1; {_HELP})")
    return WellId(row - 1, column - 1)


def row_name(row_index: int) -> str:
    """Plate row letters from a 0-based index: 0 -> 'A', 25 -> 'Z', 26 -> 'AA'.

    Raises:
        ValueError: `row_index` is negative.
    """
    if row_index < 0:
        raise ValueError(f"row index must be >= 0, got {row_index}")
    letters = ""
    n = row_index
    while True:
        letters = chr(65 + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return letters


def well_id(row_index: int, column_index: int) -> str:
    """Canonical well name from 0-based row and column indices: (1, 2) -> 'B03'."""
    return WellId(row_index, column_index).name


def split_well(well: str) -> tuple[int, int]:
    """0-based (row, column) of a well name: 'B03' -> (1, 2). Also a sort key in plate order."""
    w = WellId.parse(well)
    return w.row_index, w.column_index
