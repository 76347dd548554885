"""Name what a folder holds when it is not a plate prefect-hcs reads.

"No plate metadata" sends a user hunting; "this is an IN Cell Analyzer plate (.xdce)" tells them
what they have. Only the folder listing (and its immediate subfolders' names) is looked at.
"""

from __future__ import annotations

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.fsio import list_names

__all__ = ["describe_foreign"]

# (test on a lower-case file name, what it means). First match wins.
_FILE_SIGNS: tuple[tuple[str, str, str], ...] = (
    (
        "suffix",
        ".mlf",
        "a Yokogawa CellVoyager measurement list (.mlf) not named MeasurementData.mlf",
    ),
    (
        "suffix",
        ".mrf",
        "part of a Yokogawa CellVoyager measurement (.mrf) without its MeasurementData.mlf",
    ),
    (
        "suffix",
        ".wpi",
        "part of a Yokogawa CellVoyager measurement (.wpi) without its MeasurementData.mlf",
    ),
    ("name", "index.idx.xml", "an Opera Phenix / Operetta (Harmony) export (Index.idx.xml)"),
    ("name", "index.xml", "an Opera Phenix / Operetta (Harmony) export (Index.xml)"),
    ("name", "zarr.json", "a Zarr v3 store (an OME-Zarr is an output, not an input plate)"),
    ("name", ".zattrs", "a Zarr v2 store (an OME-Zarr is an output, not an input plate)"),
    ("name", ".zgroup", "a Zarr v2 store (an OME-Zarr is an output, not an input plate)"),
    ("suffix", ".xdce", "a GE / Cytiva IN Cell Analyzer plate (.xdce)"),
    ("suffix", ".cppipe", "a CellProfiler project folder (.cppipe), not microscope images"),
    ("suffix", ".cpproj", "a CellProfiler project folder (.cpproj), not microscope images"),
    ("suffix", ".mxprotocol", "an ImageXpress HCS.ai acquisition (.mxprotocol)"),
    ("suffix", ".jdce", "an ImageXpress HCS.ai experiment (.jdce)"),
    ("suffix", ".flex", "an Opera (classic) plate of .flex files"),
    ("name", "experiment_descriptor.xml", "an Olympus / Evident ScanR acquisition"),
    ("suffix", ".czi", "Zeiss .czi files"),
    ("suffix", ".nd2", "Nikon .nd2 files"),
    ("suffix", ".lif", "a Leica .lif file"),
)


def _matches(name: str, kind: str, sign: str) -> bool:
    return name.endswith(sign) if kind == "suffix" else name == sign


def describe_foreign(fs: AbstractFileSystem, root: str) -> str | None:
    """What the folder holds ("a Nikon .nd2 file"...) if it is recognisably another kind of plate
    or store, else None."""
    names = list_names(fs, root)
    lowered = sorted(n.lower() for n in names)
    if root.lower().rstrip("/").endswith(".zarr") or any(n.endswith(".zarr") for n in lowered):
        return "an OME-Zarr store (an output of prefect-hcs or a converter, not a plate it reads)"
    for kind, sign, meaning in _FILE_SIGNS:
        hit = next((n for n in lowered if _matches(n, kind, sign)), None)
        if hit is not None:
            return meaning
    return None
