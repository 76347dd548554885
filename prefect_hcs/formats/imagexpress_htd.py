"""MetaXpress `.HTD` files: the plate geometry an export declares (``"Key", value, ...`` lines).

The HTD describes what the journal *intended*; the image files are the truth. Everything here only
parses and compares: the handler turns contradictions into warnings.
"""

from __future__ import annotations

import csv
import re
from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.fsio import display, list_names, listed
from prefect_hcs.formats.layout import PlateError
from prefect_hcs.formats.wells import split_well, well_id

_HTD_LINE = re.compile(r'^"(?P<key>[^"]+)"\s*(?:,(?P<rest>.*))?$')


class Htd:
    """A parsed `.HTD` file: ``"Key", value, value...`` lines, remembered with their line numbers."""

    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.entries: dict[str, tuple[int, list[str]]] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            m = _HTD_LINE.match(line)
            if not m:
                raise PlateError(
                    f"malformed HTD file {where}, line {lineno}: expected '\"Key\", value', "
                    f"got {raw[:80]!r}"
                )
            rest = m["rest"]
            values = next(csv.reader([rest], skipinitialspace=True)) if rest else []
            self.entries[m["key"].strip()] = (lineno, [v.strip() for v in values])
        if not self.entries:
            raise PlateError(f"malformed HTD file {where}: it holds no '\"Key\", value' lines")

    def has(self, key: str) -> bool:
        """Whether the file has the key at all (MetaXpress versions omit different keys)."""
        return key in self.entries

    def values(self, key: str) -> list[str]:
        """The key's comma-separated values as written (empty when the key is absent)."""
        return self.entries[key][1] if key in self.entries else []

    def text(self, key: str) -> str | None:
        """The key's first value, or None when absent."""
        values = self.values(key)
        return values[0] if values else None

    def integer(self, key: str) -> int | None:
        """The key's first value as an int, or None when absent.

        Raises:
            PlateError: the value is not an integer (the message names the line).
        """
        if key not in self.entries:
            return None
        lineno, values = self.entries[key]
        try:
            return int(values[0])
        except (IndexError, ValueError):
            raise PlateError(
                f"malformed HTD file {self.where}, line {lineno}: {key!r} must be an integer, "
                f"got {', '.join(values) or 'nothing'}"
            ) from None

    def flag(self, key: str) -> bool | None:
        """The key's first value as a bool (TRUE/FALSE or 1/0), or None when absent.

        Raises:
            PlateError: any other word (the message names the line).
        """
        if key not in self.entries:
            return None
        lineno, values = self.entries[key]
        word = values[0].upper() if values else ""
        if word in ("TRUE", "1"):
            return True
        if word in ("FALSE", "0"):
            return False
        raise PlateError(
            f"malformed HTD file {self.where}, line {lineno}: {key!r} must be TRUE or FALSE, "
            f"got {', '.join(values) or 'nothing'}"
        )

    def flags(self, key: str) -> list[bool]:
        """Every value of the key as a bool (e.g. ``WellsSelection`` rows; the key must exist).

        Raises:
            PlateError: a value is not TRUE or FALSE (the message names the line).
        """
        lineno, values = self.entries[key]
        out = []
        for v in values:
            if v.upper() not in ("TRUE", "FALSE"):
                raise PlateError(
                    f"malformed HTD file {self.where}, line {lineno}: {key!r} must be a list of "
                    f"TRUE/FALSE, got {v!r}"
                )
            out.append(v.upper() == "TRUE")
        return out


def find_htd(fs: AbstractFileSystem, root: str) -> str | None:
    """Path of the plate's `.HTD` file (plate folder first, then TimePoint_1/), or None."""
    for folder in (root, f"{root}/TimePoint_1"):
        names = sorted(n for n, kind in list_names(fs, folder).items() if kind == "file")
        htds = [n for n in names if n.lower().endswith(".htd")]
        if htds:
            return f"{folder}/{htds[0]}"
    return None


def read_htd(fs: AbstractFileSystem, path: str) -> Htd:
    """Read and parse an HTD file (UTF-8 with or without BOM, else Latin-1)."""
    with fs.open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return Htd(text, display(fs, path))


def htd_expectations(htd: Htd) -> dict[str, Any]:
    """Grid, channel names and expected counts declared by the HTD."""
    sites_on = htd.flag("Sites")
    x_sites, y_sites = htd.integer("XSites"), htd.integer("YSites")
    if sites_on and (x_sites is None or y_sites is None):
        raise PlateError(
            f"malformed HTD file {htd.where}: 'Sites' is TRUE but XSites/YSites missing"
        )
    if sites_on is False or (x_sites is None and y_sites is None):
        x_sites, y_sites = 1, 1
    selected = None
    if sites_on and all(htd.has(f"SiteSelection{r}") for r in range(1, (y_sites or 1) + 1)):
        selected = sum(sum(htd.flags(f"SiteSelection{r}")) for r in range(1, (y_sites or 1) + 1))
    n_waves = htd.integer("NWavelengths")
    if htd.flag("Waves") is False:
        n_waves = 1
    names: dict[int, str] = {}
    collected = 0
    for c in range(1, (n_waves or 0) + 1):
        if htd.text(f"WaveName{c}"):
            names[c] = htd.text(f"WaveName{c}") or ""
        collect = htd.integer(f"WaveCollect{c}") if htd.has(f"WaveCollect{c}") else 1
        collected += 1 if collect else 0
    z_steps = htd.integer("ZSteps") if htd.flag("ZSeries") else 1
    return {
        "grid": (y_sites or 1, x_sites or 1),
        "selected_sites": selected,
        "wavelengths": collected if n_waves is not None else None,
        "channel_names": names,
        "z": z_steps,
        "timepoints": htd.integer("TimePoints"),
        "plate": (htd.integer("YWells"), htd.integer("XWells")),
    }


def well_warnings(
    htd_name: str, htd: Htd, plate: tuple[int | None, int | None], wells: tuple[str, ...]
) -> list[str]:
    """Wells outside the plate the HTD declares, and selected wells without images."""
    n_rows, n_cols = plate
    out = []
    if n_rows and n_cols:
        outside = [w for w in wells if split_well(w)[0] >= n_rows or split_well(w)[1] >= n_cols]
        if outside:
            out.append(f"wells {outside} lie outside the {n_rows}x{n_cols} plate of {htd_name}")
        if all(htd.has(f"WellsSelection{r}") for r in range(1, n_rows + 1)):
            selected = [
                well_id(r, c)
                for r in range(n_rows)
                for c, on in enumerate(htd.flags(f"WellsSelection{r + 1}"))
                if on
            ]
            empty = sorted(set(selected) - set(wells), key=split_well)
            if empty:
                out.append(
                    f"{len(empty)} well(s) selected in {htd_name} have no images: {listed(empty)}"
                )
    return out
