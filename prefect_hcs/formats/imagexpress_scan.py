"""Walk a MetaXpress plate folder: which TIFF is which (well, site, channel, z, timepoint).

Folder rules (learned from MetaXpress acquisition folders and exports, see docs/formats.md):

* ``TimePoint_<t>/`` folders hold timepoints; without them the plate folder is timepoint 1.
* Inside a timepoint (or the plate folder), ``ZStep_<z>/`` folders hold z-planes. ``ZStep_0`` is
  where an export puts the projections. TIFFs *beside* ZStep folders are the acquisition folder's
  projections (or a channel taken at one plane): the handler decides from their MetaSeries XML.
* Without ZStep folders, TIFFs are planes; ``_z<n>``/``_t<n>`` name suffixes (old exports) count.
* ``_thumb`` files are MetaXpress previews, never images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.wells import WellId, WellIdError

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# Close to OpenHCS's ImageXpress regex, plus the GUID MetaXpress glues to the last name part
# (`_w1<GUID>`, or `_s3<GUID>` / `_B03<GUID>` when there is a single wavelength / site).
FILENAME_RE = re.compile(
    r"^(?:(?P<prefix>.*?)_)??(?P<well>(?-i:[A-Z]{1,2})\d{1,3}?)"
    r"(?:_s(?P<site>\d+?))?"
    r"(?:_w(?P<channel>\d+?))?"
    r"(?P<guid>" + _GUID + r")?"
    r"(?:_z(?P<z>\d+))?"
    r"(?:_t(?P<t>\d+))?"
    r"\.(?P<ext>tiff?)$",
    re.IGNORECASE,
)
TIMEPOINT_DIR = re.compile(r"^TimePoint[_-]?(\d+)$", re.IGNORECASE)
ZSTEP_DIR = re.compile(r"^ZStep[_-]?(\d+)$", re.IGNORECASE)
_TIFF_EXT = (".tif", ".tiff")

Level = Literal["zstep", "beside", "flat"]


def parse_filename(name: str) -> dict[str, Any] | None:
    """Well, site, channel, z, t and name prefix of a MetaXpress file name (None if no match)."""
    m = FILENAME_RE.match(name)
    if not m:
        return None
    try:
        well = WellId.parse(m["well"])
    except WellIdError:  # column 0
        return None
    return {
        "well": well.name,
        "site": int(m["site"]) if m["site"] else None,
        "channel": int(m["channel"]) if m["channel"] else None,
        "z": int(m["z"]) if m["z"] else None,
        "t": int(m["t"]) if m["t"] else None,
        "prefix": m["prefix"],
    }


@dataclass(frozen=True)
class Found:
    """One image file and where the folders put it (z = 0: an export's ZStep_0 projection)."""

    path: str
    well: str
    site: int
    channel: int
    z: int
    t: int
    level: Level
    prefix: str | None


@dataclass
class Scan:
    """Everything the walk found, and the problems it noticed."""

    files: list[Found] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    unparsed: list[str] = field(default_factory=list)
    not_tiff: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    subfolders: list[str] = field(default_factory=list)

    @property
    def has_zstep0(self) -> bool:
        """Whether a ZStep_0 folder (an export's projections) was found."""
        return any(f.level == "zstep" and f.z == 0 for f in self.files)


def list_entries(fs: AbstractFileSystem, path: str) -> dict[str, tuple[str, int]]:
    """{basename: (kind, size)} of a folder's direct children ({} if it is absent)."""
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out: dict[str, tuple[str, int]] = {}
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        kind = "directory" if entry.get("type") == "directory" else "file"
        out[name] = (kind, int(entry.get("size") or 0))
    return out


def _numbered(entries: dict[str, tuple[str, int]], pattern: re.Pattern) -> list[tuple[int, str]]:
    return sorted(
        (int(m.group(1)), name)
        for name, (kind, _) in entries.items()
        if kind == "directory" and (m := pattern.match(name))
    )


def _is_image_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(_TIFF_EXT) and "_thumb" not in low


def scan_plate(fs: AbstractFileSystem, root: str) -> Scan:
    """Walk the plate folder (TimePoint_/ZStep_ folders, or flat) and classify every TIFF."""
    scan = Scan()
    entries = list_entries(fs, root)
    timepoints = _numbered(entries, TIMEPOINT_DIR)
    if timepoints:
        scan.stray += [
            f"{root}/{n}"
            for n, (k, _) in sorted(entries.items())
            if k == "file" and _is_image_name(n)
        ]
        for t, name in timepoints:
            _scan_container(fs, scan, f"{root}/{name}", t, list_entries(fs, f"{root}/{name}"))
    else:
        _scan_container(fs, scan, root, None, entries)
        scan.not_tiff.clear()  # files next to the HTD are not image-folder clutter
    known = {n for _, n in timepoints} | {n for _, n in _numbered(entries, ZSTEP_DIR)}
    scan.subfolders = sorted(
        n for n, (k, _) in entries.items() if k == "directory" and n not in known
    )
    return scan


def _scan_container(
    fs: AbstractFileSystem,
    scan: Scan,
    folder: str,
    t: int | None,
    entries: dict[str, tuple[str, int]],
) -> None:
    zsteps = _numbered(entries, ZSTEP_DIR)
    level: Level = "beside" if zsteps else "flat"
    _add_files(scan, folder, entries, t, None, level)
    for z, name in zsteps:
        _add_files(scan, f"{folder}/{name}", list_entries(fs, f"{folder}/{name}"), t, z, "zstep")


def _add_files(
    scan: Scan,
    folder: str,
    entries: dict[str, tuple[str, int]],
    t: int | None,
    z: int | None,
    level: Level,
) -> None:
    for name, (kind, size) in sorted(entries.items()):
        low = name.lower()
        if kind != "file" or "_thumb" in low or low.endswith(".htd"):
            continue
        path = f"{folder}/{name}"
        if not low.endswith(_TIFF_EXT):
            scan.not_tiff.append(path)
            continue
        parsed = parse_filename(name)
        if parsed is None:
            scan.unparsed.append(path)
            continue
        for axis, folder_value in (("t", t), ("z", z)):
            if (
                parsed[axis] is not None
                and folder_value is not None
                and parsed[axis] != folder_value
            ):
                scan.conflicts.append(f"{path} ({axis}={parsed[axis]} vs folder {folder_value})")
        scan.sizes[path] = size
        scan.files.append(
            Found(
                path=path,
                well=parsed["well"],
                site=parsed["site"] or 1,
                channel=parsed["channel"] or 1,
                z=z if z is not None else parsed["z"] or 1,
                t=t if t is not None else parsed["t"] or 1,
                level=level,
                prefix=parsed["prefix"],
            )
        )


def looks_like_metaxpress(fs: AbstractFileSystem, root: str) -> bool:
    """Whether the folder holds MetaXpress-named TIFFs (directly, or in its first
    TimePoint_/ZStep_ folders): an acquisition folder has no `.HTD` to recognise it by."""
    folder = root
    for _ in range(3):
        entries = list_entries(fs, folder)
        if any(
            k == "file" and _is_image_name(n) and parse_filename(n) for n, (k, _) in entries.items()
        ):
            return True
        sub = _numbered(entries, TIMEPOINT_DIR) or _numbered(entries, ZSTEP_DIR)
        if not sub:
            return False
        folder = f"{folder}/{sub[0][1]}"
    return False
