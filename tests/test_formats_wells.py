"""`WellId`: one grammar for well names, parsed and printed in one place."""

from __future__ import annotations

import pytest

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.wells import WellId, WellIdError, row_name, split_well, well_id


@pytest.mark.parametrize(
    ("text", "row", "column"),
    [
        ("A01", 0, 0),
        ("a1", 0, 0),
        ("A1", 0, 0),
        ("b03", 1, 2),
        ("B/3", 1, 2),
        ("B/03", 1, 2),
        ("B_3", 1, 2),
        (" C-12 ", 2, 11),
        ("R01C01", 0, 0),
        ("r2c3", 1, 2),
        ("R16C24", 15, 23),
        ("Z99", 25, 98),
        ("AA01", 26, 0),
        ("AF48", 31, 47),
    ],
)
def test_parse_accepts_every_spelling(text: str, row: int, column: int) -> None:
    well = WellId.parse(text)
    assert (well.row_index, well.column_index) == (row, column)


@pytest.mark.parametrize("name", ["A01", "H12", "P24", "Z99", "AA01", "AF48", "B100"])
def test_canonical_name_round_trips(name: str) -> None:
    well = WellId.parse(name)
    assert well.name == str(well) == name
    assert WellId.parse(well.phenix_name) == well
    assert WellId.parse(well.ngff_path) == well


def test_every_well_of_a_1536_plate_round_trips() -> None:
    wells = [WellId(r, c) for r in range(32) for c in range(48)]
    assert [WellId.parse(w.name) for w in wells] == wells
    assert len({w.name for w in wells}) == 1536
    assert wells[-1].name == "AF48"


def test_parts() -> None:
    well = WellId.parse("AB07")
    assert (well.row_letter, well.column, well.row_index, well.column_index) == ("AB", 7, 27, 6)
    assert well.phenix_name == "R28C07"
    assert well.ngff_path == "AB/7"


def test_ordered_by_row_then_column_and_hashable() -> None:
    names = ["AA01", "B02", "A10", "B01", "Z99", "A02"]
    ordered = sorted(WellId.parse(n) for n in names)
    assert [w.name for w in ordered] == ["A02", "A10", "B01", "B02", "Z99", "AA01"]
    assert sorted(names, key=split_well) == [w.name for w in ordered]
    assert {WellId.parse("b3"), WellId.parse("B03"), WellId(1, 2)} == {WellId(1, 2)}


def test_frozen() -> None:
    well = WellId(0, 0)
    with pytest.raises(AttributeError):
        well.row_index = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "text", ["", "A", "01", "A0", "A00", "R0C1", "R1C0", "ABC1", "A1x", "well-1", "A/B", "A1234"]
)
def test_bad_input_is_one_user_facing_line(text: str) -> None:
    with pytest.raises(WellIdError) as info:
        WellId.parse(text)
    message = str(info.value)
    assert isinstance(info.value, UserFacingError) and isinstance(info.value, ValueError)
    assert message.startswith("not a well id: ") and repr(text) in message
    assert "\n" not in message and "'B03'" in message


def test_non_text_is_refused() -> None:
    with pytest.raises(WellIdError, match="not a well id"):
        WellId.parse(None)  # type: ignore[arg-type]


def test_negative_indices_refused() -> None:
    with pytest.raises(WellIdError, match=">= 0"):
        WellId(-1, 0)


def test_helpers_agree_with_the_type() -> None:
    assert row_name(0) == "A" and row_name(25) == "Z" and row_name(26) == "AA"
    assert well_id(1, 2) == "B03" and split_well("B03") == (1, 2)
    with pytest.raises(ValueError, match=">= 0"):
        row_name(-1)
