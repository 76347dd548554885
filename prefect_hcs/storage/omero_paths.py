"""The ``omero://`` path scheme: parsing and building virtual paths.

OMERO has no directories, so every path is *virtual*: it names an OMERO object (or a plane of one)
and is parsed here, never touched on a local disk. Paths are given without the protocol, as fsspec
strips it (``omero://plate_12/A01`` -> ``plate_12/A01``)::

    plate_<id>                                       the Plate (a directory)
    plate_<id>/<well>                                a Well, e.g. A01 (0-based row 0, column 0)
    plate_<id>/<well>/s<site:03d>                    a WellSample's Image (site = index + 1)
    plate_<id>/<well>/s<site>/<well>_s<site:03d>_w<c>_z<z:03d>_t<t:03d>.tif
                                                     one plane (1-based c, z, t), read-only TIFF
    plate_<id>/outputs/<sub_dir>/.../<file>          FileAnnotation on the Plate
    plate_<id>/<well>/outputs/<sub_dir>/.../<file>   FileAnnotation on the Well
    plate_<id>/<well>/s<site>/outputs/.../<file>     FileAnnotation on the Image

The ``plate_<id>`` prefix keeps the naming of OpenHCS's ``/omero/plate_<id>`` paths; plane names are
the ImageXpress-style names OpenHCS generates. Anything else raises ValueError naming the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from prefect_hcs.formats.wells import WellId, WellIdError

PROTOCOL = "omero"
OUTPUTS = "outputs"
#: Namespace of the FileAnnotations the filesystem writes (and the only ones it lists).
OUTPUT_NS = "org.prefect-hcs/output"
#: Namespace of the plate MapAnnotation read by the plate handler (grid, overlap, channel names).
PLATE_NS = "org.prefect-hcs/plate"

_PLATE_RE = re.compile(r"^plate_(\d+)$")
_SITE_RE = re.compile(r"^s(\d{3,})$")
_PLANE_RE = re.compile(r"^([A-Z0-9]+)_s(\d{3,})_w(\d+)_z(\d{3,})_t(\d{3,})\.tif$")

Kind = Literal["plate", "well", "site", "plane", "outputs"]
SCHEME_HELP = (
    "expected omero://plate_<id>[/<well>[/s<site>[/<plane>.tif]]] or an outputs area "
    "omero://plate_<id>[/<well>[/s<site>]]/outputs/<sub_dir>/<file>"
)


@dataclass(frozen=True)
class OmeroPath:
    """A parsed virtual path. For ``outputs`` paths, `rel` is the part below ``outputs/``."""

    kind: Kind
    plate_id: int
    well: str | None = None
    site: int | None = None
    channel: int | None = None
    z: int | None = None
    timepoint: int | None = None
    rel: str = ""

    @property
    def target(self) -> tuple[str, str | None, int | None]:
        """(level, well, site) of the object an outputs path annotates: plate, well or image."""
        if self.site is not None:
            return ("image", self.well, self.site)
        if self.well is not None:
            return ("well", self.well, None)
        return ("plate", None, None)


def strip(path: str) -> str:
    """Path without protocol, leading or trailing slashes (``omero:///plate_1/`` -> ``plate_1``)."""
    if path.startswith(f"{PROTOCOL}://"):
        path = path[len(PROTOCOL) + 3 :]
    return path.strip("/")


def parse(path: str) -> OmeroPath:
    """Parse a virtual path; ValueError names the path and the scheme when it does not fit."""
    parts = [p for p in strip(path).split("/") if p]
    if not parts or not (m := _PLATE_RE.match(parts[0])):
        raise _bad(path)
    plate_id = int(m.group(1))
    if len(parts) == 1:
        return OmeroPath("plate", plate_id)
    if parts[1] == OUTPUTS:
        return OmeroPath("outputs", plate_id, rel=_rel(path, parts[2:]))
    well = _canonical_well(parts[1], path)
    if len(parts) == 2:
        return OmeroPath("well", plate_id, well)
    if parts[2] == OUTPUTS:
        return OmeroPath("outputs", plate_id, well, rel=_rel(path, parts[3:]))
    if not (s := _SITE_RE.match(parts[2])):
        raise _bad(path)
    site = int(s.group(1))
    if site < 1:
        raise _bad(path)
    if len(parts) == 3:
        return OmeroPath("site", plate_id, well, site)
    if parts[3] == OUTPUTS:
        return OmeroPath("outputs", plate_id, well, site, rel=_rel(path, parts[4:]))
    p = _PLANE_RE.match(parts[3])
    if (
        len(parts) != 4
        or not p
        or _canonical_well(p.group(1), path) != well
        or int(p.group(2)) != site
    ):
        raise _bad(path)
    c, z, t = int(p.group(3)), int(p.group(4)), int(p.group(5))
    if min(c, z, t) < 1:
        raise _bad(path)
    return OmeroPath("plane", plate_id, well, site, c, z, t)


def plate_path(plate_id: int) -> str:
    """The plate's folder in ``omero://`` paths ('plate_<id>')."""
    return f"plate_{plate_id}"


def well_path(plate_id: int, well: str) -> str:
    """A well's folder in ``omero://`` paths ('plate_<id>/<well>')."""
    return f"plate_{plate_id}/{well}"


def site_path(plate_id: int, well: str, site: int) -> str:
    """A site's folder in ``omero://`` paths (sites zero-padded to three digits, 's001')."""
    return f"plate_{plate_id}/{well}/s{site:03d}"


def plane_name(well: str, site: int, channel: int, z: int, timepoint: int) -> str:
    """ImageXpress-style plane file name, as OpenHCS generates for OMERO plates."""
    return f"{well}_s{site:03d}_w{channel}_z{z:03d}_t{timepoint:03d}.tif"


def plane_path(plate_id: int, well: str, site: int, channel: int, z: int, timepoint: int) -> str:
    """A plane's ``omero://`` path, named like an ImageXpress file so readers find it."""
    name = plane_name(well, site, channel, z, timepoint)
    return f"{site_path(plate_id, well, site)}/{name}"


def outputs_root(p: OmeroPath) -> str:
    """The ``.../outputs`` folder of the object an outputs path annotates."""
    level, well, site = p.target
    if level == "image":
        assert well is not None and site is not None
        return f"{site_path(p.plate_id, well, site)}/{OUTPUTS}"
    if level == "well":
        assert well is not None
        return f"{well_path(p.plate_id, well)}/{OUTPUTS}"
    return f"{plate_path(p.plate_id)}/{OUTPUTS}"


def split_rel(rel: str) -> tuple[str, str]:
    """(folder, name) of a path below ``outputs/``: ``a/b/c.csv`` -> (``a/b``, ``c.csv``)."""
    folder, _, name = rel.rpartition("/")
    return folder, name


def _rel(path: str, parts: list[str]) -> str:
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{path!r}: '.' and '..' are not allowed in omero:// paths")
    return "/".join(parts)


def _canonical_well(name: str, path: str) -> str:
    """`name` if it is a canonical well name ('B03'); any other spelling is not a path here."""
    try:
        well = WellId.parse(name).name
    except WellIdError:
        raise _bad(path) from None
    if well != name:
        raise _bad(path)
    return well


def _bad(path: str) -> ValueError:
    return ValueError(f"{path!r} is not a path of the {PROTOCOL}:// scheme: {SCHEME_HELP}")
