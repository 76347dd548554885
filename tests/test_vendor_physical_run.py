"""Harmony V7 and CellVoyager plates through a real Prefect run, keeping z, t and the fields.

A per-site pipeline (no projection, no stitching) keeps what the instrument recorded, so the
OME-Zarr must carry it: pixel size, z spacing (Harmony PositionZ / CellVoyager bts:Z), time
interval (AbsTime / bts:Time) with units, each field's translation from its stage position, the
channel names, and the absent planes (a channel taken at one plane only) filled with zeros.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr

from prefect_hcs.formats import open_plate
from prefect_hcs.formats.omezarr import open_store
from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.testing.synthetic_cellvoyager import make_cellvoyager_plate
from prefect_hcs.testing.synthetic_harmony import make_harmony_plate

pytestmark = pytest.mark.server
PER_SITE = {
    "name": "fields",
    "steps": [
        {
            "name": "background",
            "func": {"name": "tophat_background", "kwargs": {"radius": 5}},
            "variable_components": ["site"],
        }
    ],
}


def _drop_channel2_planes(root: Path, fmt: str) -> None:
    """Make channel 2 a single-plane channel, as an instrument protocol can."""
    if fmt == "phenix":
        index = root / "Images" / "Index.xml"
        text = index.read_text(encoding="utf-8-sig")
        out, pos = [], 0
        while (start := text.find('<Image Version="1">', pos)) != -1:
            end = text.index("</Image>", start) + len("</Image>")
            url = text[text.index("<URL>", start) + 5 : text.index("</URL>", start)]
            out.append(text[pos:start])
            if "-ch2" in url and "p01-" not in url:
                (root / "Images" / url).unlink()
            else:
                out.append(text[start:end])
            pos = end
        index.write_text("".join(out) + text[pos:], encoding="utf-8")
        return
    mlf = root / "MeasurementData.mlf"
    kept = []
    for line in mlf.read_text().splitlines(keepends=True):
        name = line.split(">")[1].split("<")[0] if 'bts:Type="IMG"' in line else ""
        if name.endswith("C02.tif") and "Z01C02" not in name:
            (root / name).unlink()
            continue
        kept.append(line)
    mlf.write_text("".join(kept))


@pytest.mark.parametrize("fmt", ["phenix", "cellvoyager"])
def test_physical_metadata_reaches_the_ome_zarr(prefect_server, tmp_path, fmt):
    from prefect_hcs.runtime.flow import process_plate

    root = tmp_path / f"P_{fmt}"
    geometry = dict(wells=["B02"], sites=4, channels=2, z=3, timepoints=2, size=64, seed=9)
    if fmt == "phenix":
        truth = make_harmony_plate(str(root), variant="v7", **geometry)
    else:
        truth = make_cellvoyager_plate(str(root), **geometry)
    _drop_channel2_planes(root, fmt)
    layout = open_plate(str(root))
    assert len(layout.absent) == 4 * 2 * 2  # sites x planes 2..3 x timepoints

    state = process_plate(plate=str(root), pipeline=PER_SITE, return_state=True)
    assert state.is_completed(), state.message
    url = state.result()["output"]
    assert validate_plate(url) == []
    px = truth["pixel_size_um"]
    origin = min(layout.field_position_um("B02", s) for s in layout.sites)
    for field, site in enumerate(layout.sites):
        group = zarr.open_group(
            store=open_store(url, read_only=True), path=f"B/2/{field}", mode="r"
        )
        attrs = group.attrs.asdict()
        scale, translation = attrs["ome"]["multiscales"][0]["datasets"][0][
            "coordinateTransformations"
        ]
        assert scale["scale"] == pytest.approx(
            [truth["time_interval_s"], 1.0, truth["z_step_um"], px, px]
        )
        units = {a["name"]: a.get("unit") for a in attrs["ome"]["multiscales"][0]["axes"]}
        assert units == {"t": "second", "c": None, "z": "micrometer", "y": "micrometer",
                         "x": "micrometer"}  # fmt: skip
        x, y = layout.field_position_um("B02", site)
        # stage Y grows upwards for both vendors: image rows grow downwards
        top = max(layout.field_position_um("B02", s)[1] for s in layout.sites)
        assert translation["translation"][-2:] == pytest.approx([top - y, x - origin[0]], abs=0.05)
        names = [c["label"] for c in attrs["ome"]["omero"]["channels"]]
        assert names == [truth["channel_names"]["1"], truth["channel_names"]["2"]]
        absent = {
            (a["channel"], a["z"], a["timepoint"]) for a in attrs["prefect_hcs"]["absent_planes"]
        }
        assert absent == {(2, z, t) for z in (2, 3) for t in (1, 2)}
