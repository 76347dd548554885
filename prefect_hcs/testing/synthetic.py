"""Synthetic plates in the microscopes' real on-disk layouts, with a ground truth to test against.

Each well is one large canvas of blurred, non-touching elliptical nuclei (channel 1) and a dimmer
cytoplasm-like signal around them (channels 2+), on a smooth background gradient. The canvas is
cut into a grid of overlapping tiles; each tile is displaced by a random stage error of up to
±3 px. The metadata (HTD/TIFF stage positions, Harmony PositionX/Y) reports the *nominal* grid
positions, as real microscopes do; the true, jittered positions are in ``ground_truth.json``.

Z-planes: best focus is the middle plane ``(z + 1) // 2``; planes further away are more blurred.
Timepoints repeat the same scene with fresh noise. Every well uses its own random generator seeded
by (seed, row, column), so a well looks the same whatever other wells are on the plate, and the
files are byte-identical for a given seed.

Phenix convention (shared with the reader): PositionX grows to the right and PositionY grows
**upwards**, both relative to the well centre, and fields are numbered centre-first, then in a
snake over the remaining tiles.

The scene itself (nuclei, cytoplasm, background, noise) is drawn by `synthetic_scene`, shared
with the other `synthetic_*` generators.
"""

from __future__ import annotations

import io
import json
import math
import uuid
import xml.etree.ElementTree as ET
from typing import Any, Literal

import numpy as np
import tifffile
from scipy import ndimage

from prefect_hcs.formats.fsio import resolve
from prefect_hcs.formats.wells import split_well
from prefect_hcs.testing.synthetic_metaseries import calibration_props, metaseries_description
from prefect_hcs.testing.synthetic_scene import JITTER_PX, place_nuclei, render_signals, tile_noise

IX_CHANNELS = ("DAPI", "FITC", "TexasRed", "Cy5", "Cy3", "CFP")
PHENIX_CHANNELS = ("HOECHST 33342", "Alexa 488", "Alexa 568", "Alexa 647", "Alexa 405", "Cy3")
HARMONY_NS = "http://www.perkinelmer.com/PEHH/HarmonyV6"
_PLATES = ((8, 12, 96), (16, 24, 384), (32, 48, 1536))


def site_grid(sites: int) -> tuple[int, int]:
    """Square-ish (rows, cols) for a number of sites: 4 -> (2, 2), 6 -> (2, 3), 5 -> (1, 5)."""
    rows = max(d for d in range(1, math.isqrt(sites) + 1) if sites % d == 0)
    return rows, sites // rows


def phenix_field_order(rows: int, cols: int) -> list[tuple[int, int]]:
    """(row, col) of Harmony fields 1, 2, ...: the centre tile first, then a snake over the rest."""
    centre = ((rows - 1) // 2, (cols - 1) // 2)
    order = [centre]
    for r in range(rows):
        columns = range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)
        order += [(r, c) for c in columns if (r, c) != centre]
    return order


def new_guid(rng: np.random.Generator) -> str:
    """A reproducible upper-case UUID4, as MetaXpress names its files and plates."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()


def _tiff_bytes(array: np.ndarray, description: str | None = None) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, description=description, metadata=None, software=False)
    return buf.getvalue()


def _metaxpress_description(
    size: int, pixel_um: float, stage_xy: tuple[float, float], z_um: float, name: str
) -> str:
    return metaseries_description(
        {
            **calibration_props(size, pixel_um),
            "stage-position-x": ("float", f"{stage_xy[0]:.4f}"),
            "stage-position-y": ("float", f"{stage_xy[1]:.4f}"),
            "z-position": ("float", f"{z_um:.4f}"),
            "image-name": ("string", name),
            "_IllumSetting_": ("string", name),
        }
    )


def plate_dims(wells: list[str]) -> tuple[int, int, int]:
    """(rows, columns, wells) of the smallest standard plate that holds these wells."""
    rows = max(split_well(w)[0] for w in wells) + 1
    cols = max(split_well(w)[1] for w in wells) + 1
    return next((r, c, n) for r, c, n in _PLATES if rows <= r and cols <= c)


def htd_text(
    plate_name: str,
    wells: list[str],
    grid: tuple[int, int],
    channels: int,
    z: int,
    t: int,
    guid: str,
    names: list[str] | None = None,
) -> str:
    """A MetaXpress `.HTD` text (CRLF lines) for the plate; `names` defaults to IX_CHANNELS."""
    names = names or [IX_CHANNELS[(c - 1) % len(IX_CHANNELS)] for c in range(1, channels + 1)]
    n_rows, n_cols, n_wells = plate_dims(wells)
    chosen = {split_well(w) for w in wells}

    def bools(values: list[bool]) -> str:
        return ", ".join("TRUE" if v else "FALSE" for v in values)

    lines = [
        '"HTSInfoFile", Version 1.0',
        f'"Description", "{plate_name}: synthetic plate written by prefect-hcs"',
        f'"PlateType", {dict(((96, 6), (384, 7), (1536, 8)))[n_wells]}',
        f'"TimePoints", {t}',
        f'"ZSeries", {"TRUE" if z > 1 else "FALSE"}',
        f'"ZSteps", {z}',
        '"ZProjection", FALSE',
        f'"XWells", {n_cols}',
        f'"YWells", {n_rows}',
    ]
    lines += [
        f'"WellsSelection{r + 1}", ' + bools([(r, c) in chosen for c in range(n_cols)])
        for r in range(n_rows)
    ]
    rows, cols = grid
    lines += [
        f'"Sites", {"TRUE" if rows * cols > 1 else "FALSE"}',
        f'"XSites", {cols}',
        f'"YSites", {rows}',
    ]
    lines += [f'"SiteSelection{r + 1}", ' + bools([True] * cols) for r in range(rows)]
    lines += ['"Waves", TRUE', f'"NWavelengths", {channels}']
    for c in range(1, channels + 1):
        lines += [
            f'"WaveName{c}", "{names[c - 1]}"',
            f'"WaveCollect{c}", 1',
        ]
    lines += [f'"UniquePlateIdentifier", "{guid}"', '"EndFile"']
    return "\r\n".join(lines) + "\r\n"


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{HARMONY_NS}}}{tag}", attrib)
    if text is not None:
        el.text = str(text)
    return el


class _PhenixIndex:
    """Builds a Harmony-like Index.idx.xml as the images are written."""

    def __init__(self, plate_name: str, wells: list[str], channels: int, size: int, px_m: str):
        ET.register_namespace("", HARMONY_NS)
        self.root = ET.Element(f"{{{HARMONY_NS}}}EvaluationInputData", {"Version": "2"})
        _sub(self.root, "User", "prefect-hcs")
        _sub(self.root, "InstrumentType", "Phenix")
        plate = _sub(_sub(self.root, "Plates"), "Plate")
        n_rows, n_cols, n_wells = plate_dims(wells)
        for tag, value in (
            ("PlateID", plate_name),
            ("MeasurementID", plate_name + "-1"),
            ("Name", plate_name),
            ("PlateTypeName", f"{n_wells}well"),
            ("PlateRows", n_rows),
            ("PlateColumns", n_cols),
        ):
            _sub(plate, tag, value)
        self.px_m, self.size = px_m, size
        self.wells_el = _sub(self.root, "Wells")
        self.well_els: dict[str, ET.Element] = {}
        for well in wells:
            r, c = split_well(well)
            _sub(plate, "Well", id=f"{r + 1:02d}{c + 1:02d}")
            well_el = _sub(self.wells_el, "Well")
            _sub(well_el, "id", f"{r + 1:02d}{c + 1:02d}")
            _sub(well_el, "Row", r + 1)
            _sub(well_el, "Col", c + 1)
            self.well_els[well] = well_el
        entry_map = _sub(_sub(self.root, "Maps"), "Map")
        for ch in range(1, channels + 1):
            entry = _sub(entry_map, "Entry", ChannelID=str(ch))
            _sub(entry, "ChannelName", PHENIX_CHANNELS[(ch - 1) % len(PHENIX_CHANNELS)])
            _sub(entry, "ImageType", "Signal")
            _sub(entry, "AcquisitionType", "NipkowConfocal")
            _sub(entry, "ImageResolutionX", px_m, Unit="m")
            _sub(entry, "ImageResolutionY", px_m, Unit="m")
            _sub(entry, "ImageSizeX", size)
            _sub(entry, "ImageSizeY", size)
        self.images_el = _sub(self.root, "Images")

    def add(self, well: str, field: int, z: int, ch: int, t: int, url: str, pos: tuple[str, str]):
        r, c = split_well(well)
        ident = f"{r + 1:02d}{c + 1:02d}K{t}F{field}P{z}R{ch}"
        _sub(self.well_els[well], "Image", id=ident)
        image = _sub(self.images_el, "Image", Version="1")
        for tag, value, unit in (
            ("id", ident, None),
            ("State", "Ok", None),
            ("URL", url, None),
            ("Row", r + 1, None),
            ("Col", c + 1, None),
            ("FieldID", field, None),
            ("PlaneID", z, None),
            ("TimepointID", t, None),
            ("FlimID", 1, None),
            ("ChannelID", ch, None),
            ("ChannelName", PHENIX_CHANNELS[(ch - 1) % len(PHENIX_CHANNELS)], None),
            ("ImageResolutionX", self.px_m, "m"),
            ("ImageResolutionY", self.px_m, "m"),
            ("ImageSizeX", self.size, None),
            ("ImageSizeY", self.size, None),
            ("PositionX", pos[0], "m"),
            ("PositionY", pos[1], "m"),
            ("PositionZ", f"{(z - 1) * 1e-6:.3g}", "m"),
        ):
            _sub(image, tag, value, **({"Unit": unit} if unit else {}))

    def to_bytes(self) -> bytes:
        ET.indent(self.root, space="  ")
        return ET.tostring(self.root, encoding="utf-8", xml_declaration=True) + b"\n"


def make_plate(
    out_dir: str,
    *,
    format: Literal["imagexpress", "phenix"],
    wells: list[str],
    sites: int,
    channels: int,
    z: int,
    size: int,
    overlap: float = 0.1,
    seed: int = 0,
    timepoints: int = 1,
    nuclei_per_well: int | None = None,
    plate_name: str = "SynthPlate",
) -> dict[str, Any]:
    """Write a synthetic plate to `out_dir` (any fsspec URL) and return its ground truth.

    `nuclei_per_well=None` draws a different, seeded count per well; an int asks for that many
    in every well (fewer if they cannot be placed without touching; the truth says how many).
    """
    if format not in ("imagexpress", "phenix"):
        raise ValueError(f"format must be 'imagexpress' or 'phenix', got {format!r}")
    if min(sites, channels, z, timepoints) < 1 or size < 32 or not 0 <= overlap < 0.5:
        raise ValueError("need sites, channels, z, timepoints >= 1, size >= 32, 0 <= overlap < 0.5")
    wells = sorted(dict.fromkeys(wells), key=split_well)
    if not wells:
        raise ValueError("need at least one well")
    fs, root = resolve(out_dir)
    fs.makedirs(root, exist_ok=True)
    grid = site_grid(sites)
    rows, cols = grid
    step = round(size * (1 - overlap))
    scale = size / 256
    pixel_um = round(332.8 / size, 4)  # 1.3 µm at 256 px, 0.65 µm at 512 px: same field of view
    canvas_shape = (
        2 * JITTER_PX + (rows - 1) * step + size,
        2 * JITTER_PX + (cols - 1) * step + size,
    )
    focus = (z + 1) // 2
    meta_rng = np.random.default_rng([seed, 1_000_003])
    plate_guid = new_guid(meta_rng)
    phenix = _PhenixIndex(plate_name, wells, channels, size, f"{pixel_um * 1e-6:.6g}")
    image_dir = f"{root}/Images" if format == "phenix" else root
    made_dirs: set[str] = set()
    truth_wells: dict[str, Any] = {}

    def write(path: str, data: bytes) -> None:
        folder = path.rsplit("/", 1)[0]
        if folder not in made_dirs:
            fs.makedirs(folder, exist_ok=True)
            made_dirs.add(folder)
        with fs.open(path, "wb") as fh:
            fh.write(data)

    fields = phenix_field_order(rows, cols)
    for well in wells:
        row_i, col_i = split_well(well)
        rng = np.random.default_rng([seed, row_i, col_i])
        nominal = {
            r * cols + c + 1: (JITTER_PX + r * step, JITTER_PX + c * step)
            for r in range(rows)
            for c in range(cols)
        }
        true = {
            s: (
                int(y + rng.integers(-JITTER_PX, JITTER_PX + 1)),
                int(x + rng.integers(-JITTER_PX, JITTER_PX + 1)),
            )
            for s, (y, x) in nominal.items()
        }
        min_dist = 18.0 * scale
        rects = [(y, x, size) for y, x in true.values()]
        covered = rows * cols * size * size * (1 - overlap) ** 2
        count = nuclei_per_well or int(covered / min_dist**2 * rng.uniform(0.15, 0.35))
        centres = place_nuclei(rng, rects, canvas_shape, count, min_dist)
        signals = render_signals(rng, canvas_shape, centres, channels, scale)
        truth_wells[well] = {
            "nuclei": len(centres),
            "nuclei_centres": [[round(float(y), 2), round(float(x), 2)] for y, x in centres],
            "tile_positions": {str(s): list(p) for s, p in true.items()},
            "nominal_tile_positions": {str(s): list(p) for s, p in nominal.items()},
            "canvas_shape": list(canvas_shape),
        }
        for c, signal in enumerate(signals, 1):
            planes: dict[int, np.ndarray] = {}
            for zi in range(1, z + 1):
                dz = abs(zi - focus)
                if dz not in planes:
                    planes[dz] = (
                        signal if dz == 0 else ndimage.gaussian_filter(signal, 2.0 * scale * dz)
                    )
                plane = planes[dz]
                for t in range(1, timepoints + 1):
                    for field, (r, cc) in enumerate(fields, 1):
                        site = r * cols + cc + 1
                        y, x = true[site]
                        tile = tile_noise(rng, plane[y : y + size, x : x + size])
                        ny, nx = nominal[site]
                        if format == "imagexpress":
                            sub = f"TimePoint_{t}" + (f"/ZStep_{zi}" if z > 1 else "")
                            name = (
                                f"{plate_name}_{well}"
                                + (f"_s{site}" if sites > 1 else "")
                                + f"_w{c}{new_guid(meta_rng)}.tif"
                            )
                            stage = (col_i * 9000.0 + nx * pixel_um, row_i * 9000.0 + ny * pixel_um)
                            desc = _metaxpress_description(
                                size, pixel_um, stage, 1000.0 + zi, IX_CHANNELS[(c - 1) % 6]
                            )
                            write(f"{root}/{sub}/{name}", _tiff_bytes(tile, desc))
                        else:
                            name = f"r{row_i + 1:02d}c{col_i + 1:02d}f{field:02d}p{zi:02d}-ch{c}sk{t}fk1fl1.tiff"
                            cy = ny + size / 2 - canvas_shape[0] / 2
                            cx = nx + size / 2 - canvas_shape[1] / 2
                            pos = (f"{cx * pixel_um * 1e-6:.9g}", f"{-cy * pixel_um * 1e-6:.9g}")
                            phenix.add(well, field, zi, c, t, name, pos)
                            write(f"{image_dir}/{name}", _tiff_bytes(tile))
        if format == "phenix":
            truth_wells[well]["phenix_field_of_site"] = {
                str(r * cols + cc + 1): f for f, (r, cc) in enumerate(fields, 1)
            }
    if format == "imagexpress":
        write(
            f"{root}/{plate_name}.HTD",
            htd_text(plate_name, wells, grid, channels, z, timepoints, plate_guid).encode(),
        )
    else:
        write(f"{image_dir}/Index.idx.xml", phenix.to_bytes())
    names = IX_CHANNELS if format == "imagexpress" else PHENIX_CHANNELS
    truth = {
        "format": format,
        "plate_name": plate_name,
        "wells": truth_wells,
        "grid": [rows, cols],
        "overlap": overlap,
        "step_px": step,
        "tile_size": size,
        "channels": channels,
        "channel_names": {str(c): names[(c - 1) % len(names)] for c in range(1, channels + 1)},
        "z": z,
        "focus_plane": focus,
        "timepoints": timepoints,
        "sites": sites,
        "seed": seed,
        "pixel_size_um": pixel_um,
    }
    write(f"{root}/ground_truth.json", json.dumps(truth, indent=1).encode())
    return truth
