"""Well filters: which wells of a plate a run or a step applies to.

Syntax (items may be combined with commas): ``A01`` · ``R01C01`` · ``row:A`` · ``col:3`` ·
``col:1-6`` · ``A01:B12`` (a rectangle) · ``all``; or a list of those; or an int N (the first N
wells in plate order). Mode ``include`` keeps the matches, ``exclude`` drops them.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect_hcs.formats.wells import WellId, WellIdError


class WellFilterError(ValueError):
    """A well filter that cannot be read (the message names the filter)."""


def _canonical(token: str) -> str:
    try:
        return WellId.parse(token).name
    except WellIdError:
        raise WellFilterError(f"{token!r} is not a well id (e.g. 'B03' or 'R02C03')") from None


def _match_token(token: str, wells: Sequence[str]) -> set[str]:
    token = token.strip()
    low = token.lower()
    if low == "all":
        return set(wells)
    if low.startswith("row:"):
        rows = {r.strip().upper() for r in token[4:].split("|")}
        return {w for w in wells if WellId.parse(w).row_letter in rows}
    if low.startswith("col:"):
        spec = token[4:].strip()
        if "-" in spec:
            a, b = (int(x) for x in spec.split("-", 1))
            cols = set(range(a, b + 1))
        else:
            cols = {int(spec)}
        return {w for w in wells if WellId.parse(w).column in cols}
    if ":" in token:
        first, last = (WellId.parse(_canonical(x.strip())) for x in token.split(":", 1))
        r0, r1 = sorted((first.row_index, last.row_index))
        c0, c1 = sorted((first.column_index, last.column_index))
        return {
            w
            for w in wells
            if r0 <= (i := WellId.parse(w)).row_index <= r1 and c0 <= i.column_index <= c1
        }
    return {_canonical(token)} & set(wells)


def select_wells(
    wells: Sequence[str], well_filter: list[str] | str | int | None, mode: str = "include"
) -> tuple[str, ...]:
    """Apply a filter to the plate's wells (kept in plate order)."""
    if well_filter is None:
        return tuple(wells)
    try:
        if isinstance(well_filter, bool):
            raise WellFilterError("a well filter cannot be true/false")
        if isinstance(well_filter, int):
            if well_filter < 1:
                raise WellFilterError(f"the first-N filter must be >= 1, got {well_filter}")
            matched = set(list(wells)[:well_filter])
        else:
            tokens = well_filter.split(",") if isinstance(well_filter, str) else list(well_filter)
            matched = set()
            for tok in tokens:
                matched |= _match_token(str(tok), wells)
    except (ValueError, AttributeError) as exc:
        raise WellFilterError(f"bad well filter {well_filter!r}: {exc}") from None
    if str(mode) in ("exclude", "WellFilterMode.EXCLUDE"):
        return tuple(w for w in wells if w not in matched)
    return tuple(w for w in wells if w in matched)
