"""Physical metadata from the plate to the OME-Zarr: pixel size, z spacing and time interval with
units, field translations from stage positions, channel colours, absent planes; stitching from
stage positions; the default pipeline on any plate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from helpers import make_layout
from test_processing_stitching import synthetic_canvas

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.formats.layout import ChannelInfo, ImageRef, PlaneKey, PlateLayout
from prefect_hcs.formats.omezarr import OmeZarrPlateWriter, open_store, read_well_image
from prefect_hcs.formats.physical import channel_color, field_offsets_um
from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.pipeline.compiler import CompileError, compile_plate
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.processing.stitching import compute_tile_positions, stitch_tiles
from prefect_hcs.runtime.plate_outputs import finalize_outputs, prepare_outputs
from prefect_hcs.runtime.worker import run_well_chain
from prefect_hcs.testing.synthetic import make_plate, phenix_field_order

PX = 0.65
BACKGROUND = {
    "name": "fields",
    "steps": [
        {
            "name": "background",
            "func": {"name": "tophat_background", "kwargs": {"radius": 5}},
            "variable_components": ["site"],
        }
    ],
}


def _field_attrs(zarr_url: str, path: str) -> dict:
    group = zarr.open_group(store=open_store(zarr_url, read_only=True), path=path, mode="r")
    return group.attrs.asdict()


def _transforms(attrs: dict) -> tuple[list[float], list[float]]:
    scale, translation = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    return scale["scale"], translation["translation"]


def _units(attrs: dict) -> dict[str, str | None]:
    return {a["name"]: a.get("unit") for a in attrs["ome"]["multiscales"][0]["axes"]}


def _positioned_layout(
    root: Path,
    *,
    fmt: str = "imagexpress",
    stage: dict[int, tuple[float, float]],
    channels: int = 2,
    z: int = 3,
    timepoints: int = 2,
    size: int = 64,
    absent: tuple[tuple[int, int, int], ...] = (),
    pixel_size_um: float | None = PX,
    write: bool = True,
) -> PlateLayout:
    """One well A01, its sites at the given stage (x, y) µm; planes written as real TIFFs unless
    they are `absent` ((channel, z, t) not acquired for the whole plate)."""
    rng = np.random.default_rng(5)
    images = []
    for site, (sx, sy) in stage.items():
        for c in range(1, channels + 1):
            for k in range(1, z + 1):
                for t in range(1, timepoints + 1):
                    if (c, k, t) in absent:
                        continue
                    path = root / f"A01_s{site}_w{c}_z{k}_t{t}.tif"
                    if write:
                        pixels = rng.integers(200, 4000, (size, size)).astype(np.uint16)
                        tifffile.imwrite(path, pixels)
                    images.append(
                        ImageRef(
                            well="A01",
                            site=site,
                            channel=c,
                            z=k,
                            timepoint=t,
                            path=str(path),
                            stage_x_um=sx,
                            stage_y_um=sy,
                            z_um=100.0 + 2.5 * (k - 1),
                        )
                    )
    return PlateLayout(
        plate_id=root.name,
        format=fmt,  # type: ignore[arg-type]
        url=str(root),
        wells=("A01",),
        sites=tuple(stage),
        channels=tuple(range(1, channels + 1)),
        z_planes=tuple(range(1, z + 1)),
        timepoints=tuple(range(1, timepoints + 1)),
        pixel_size_um=pixel_size_um,
        channel_names={1: "DAPI", 2: "GFP"} if channels == 2 else {1: "DAPI"},
        channel_info={
            1: ChannelInfo(name="DAPI", excitation_nm=405, emission_nm=461),
            2: ChannelInfo(name="GFP", excitation_nm=488, emission_nm=519),
        },
        z_spacing_um=2.5,
        time_interval_s=600.0,
        image_shape=(size, size),
        dtype="uint16",
        images=tuple(images),
        absent=tuple(
            PlaneKey(well="A01", site=s, channel=c, z=k, timepoint=t)
            for s in stage
            for c, k, t in absent
        ),
    )


def _run_without_prefect(plan) -> str:
    """The worker functions a flow calls, in its order (real files, real OME-Zarr)."""
    prepare_outputs(plan.output, plan.plate_id, plan.wells, overwrite=False)
    for well in plan.wells:
        run_well_chain(list(plan.plans_for(well)), plan.output)
    finalize_outputs(plan.output, list(plan.step_plans))
    return plan.output.zarr_url


# -- conventions --------------------------------------------------------------------------------


def test_field_offsets_follow_each_vendors_stage_axes():
    stage = {1: (1000.0, 2000.0), 2: (1150.0, 2000.0), 3: (1000.0, 2150.0)}
    ix = _positioned_layout(Path("/nowhere/IX"), stage=stage, write=False)
    phenix = _positioned_layout(Path("/nowhere/PH"), fmt="phenix", stage=stage, write=False)
    # MetaXpress: stage Y grows downwards like image rows; site 3 is below site 1
    assert field_offsets_um(ix, "A01") == ((0.0, 0.0), (0.0, 150.0), (150.0, 0.0))
    # Harmony: stage Y grows upwards; site 3 (larger Y) is the top row
    assert field_offsets_um(phenix, "A01") == ((150.0, 0.0), (150.0, 150.0), (0.0, 0.0))


def test_field_offsets_need_every_site_positioned():
    layout = make_layout(1)  # no stage positions at all
    assert field_offsets_um(layout, "A01") is None


@pytest.mark.parametrize(
    ("name", "emission", "color"),
    [
        ("DAPI", 461, "0000FF"),
        ("whatever", 519, "00FF00"),
        ("Alexa 568", 603, "FF0000"),
        ("far red", 670, "FF00FF"),
        ("HOECHST 33342", None, "0000FF"),
        ("Alexa 488", None, "00FF00"),
        ("TexasRed", None, "FF0000"),
        ("Cy5", None, "FF00FF"),
    ],
)
def test_channel_colour_from_emission_then_name(name, emission, color):
    assert channel_color(name, emission, 0) == color


# -- the plan -----------------------------------------------------------------------------------


def test_plan_freezes_physical_metadata(tmp_path):
    stage = {1: (5000.0, 7000.0), 2: (5037.44, 7000.0)}
    layout = _positioned_layout(tmp_path / "P", stage=stage, write=False)
    out = compile_plate(layout, load_pipeline(BACKGROUND)).output
    assert out.pixel_size_um == PX
    assert out.z_spacing_um == 2.5
    assert out.time_interval_s == 600.0
    assert out.channel_names == ("DAPI", "GFP")
    assert out.channel_colors == ("0000FF", "00FF00")
    assert out.field_translations_um == {"A01": ((0.0, 0.0), (0.0, 37.44))}
    assert out.field_sites == (1, 2)

    # the values are part of the plan's fingerprint
    moved = layout.model_copy(update={"z_spacing_um": 3.0})
    assert (
        compile_plate(moved, load_pipeline(BACKGROUND)).fingerprint
        != compile_plate(layout, load_pipeline(BACKGROUND)).fingerprint
    )


def test_projection_drops_z_spacing_and_stitching_drops_translations(tmp_path):
    stage = {1: (0.0, 0.0), 2: (37.44, 0.0)}
    layout = _positioned_layout(tmp_path / "P", stage=stage, size=64, write=False)
    projected = compile_plate(
        layout,
        load_pipeline(
            {"name": "p", "steps": [{"func": "max_projection", "variable_components": ["z"]}]}
        ),
    ).output
    assert projected.z_spacing_um is None  # one projected plane has no spacing
    assert projected.time_interval_s == 600.0
    stitched = compile_plate(layout, load_pipeline("demo")).output
    assert stitched.fields_per_well == 1
    assert stitched.field_translations_um == {} and stitched.field_sites == ()


def test_unknown_pixel_size_is_a_plan_warning_and_no_translation(tmp_path):
    stage = {1: (0.0, 0.0), 2: (37.44, 0.0)}
    layout = _positioned_layout(tmp_path / "P", stage=stage, pixel_size_um=None, write=False)
    plan = compile_plate(layout, load_pipeline(BACKGROUND))
    assert any("pixel size is not recorded" in w for w in plan.warnings), plan.warnings
    assert plan.output.pixel_size_um is None
    assert plan.output.field_translations_um == {}  # µm offsets on a pixel scale would lie


def test_absent_and_padded_planes_are_plan_warnings(tmp_path):
    stage = {1: (0.0, 0.0)}
    layout = _positioned_layout(
        tmp_path / "P", stage=stage, absent=((2, 2, 1), (2, 3, 1)), write=False
    )
    layout = layout.model_copy(update={"padded": ("/x/A01_s1_w2_z1_t2.tif",)})
    plan = compile_plate(layout, load_pipeline(BACKGROUND))
    absent = next(w for w in plan.warnings if "not acquired" in w)
    assert "2 plane(s)" in absent and "(c2, z2, t1), (c2, z3, t1)" in absent
    padded = next(w for w in plan.warnings if "padding" in w)
    assert "/x/A01_s1_w2_z1_t2.tif" in padded
    assert plan.output.absent_planes == {"A01": ((1, 2, 2, 1), (1, 2, 3, 1))}


# -- the OME-Zarr -------------------------------------------------------------------------------


def test_run_writes_scale_units_translations_colours_and_absent_planes(tmp_path):
    plate = tmp_path / "P1"
    plate.mkdir()
    stage = {1: (5000.0, 7000.0), 2: (5037.44, 7000.0), 3: (5000.0, 7037.44)}
    layout = _positioned_layout(plate, stage=stage, absent=((2, 2, 1), (2, 3, 1)))
    plan = compile_plate(layout, load_pipeline(BACKGROUND))
    url = _run_without_prefect(plan)
    assert validate_plate(url) == []

    expected = {0: (0.0, 0.0), 1: (0.0, 37.44), 2: (37.44, 0.0)}
    for field, (ty, tx) in expected.items():
        attrs = _field_attrs(url, f"A/1/{field}")
        scale, translation = _transforms(attrs)
        assert scale == [600.0, 1.0, 2.5, PX, PX]
        assert translation == pytest.approx([0.0, 0.0, 0.0, ty, tx])
        assert _units(attrs) == {
            "t": "second",
            "c": None,
            "z": "micrometer",
            "y": "micrometer",
            "x": "micrometer",
        }
        colors = [c["color"] for c in attrs["ome"]["omero"]["channels"]]
        assert colors == ["0000FF", "00FF00"]
        assert attrs["prefect_hcs"]["absent_planes"] == [
            {"site": field + 1, "channel": 2, "z": 2, "timepoint": 1},
            {"site": field + 1, "channel": 2, "z": 3, "timepoint": 1},
        ]
        pixels = read_well_image(url, "A01", field)  # (t, c, z, y, x)
        assert not pixels[0, 1, 1:].any()  # absent: zeros
        assert pixels[0, 1, 0].any() and all(pixels[1, 1, k].any() for k in (1, 2))  # t2 acquired

    # ome-zarr-py reads the same physical scale
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = list(Reader(parse_url(f"{url}/A/1/1"))())[0]
    assert node.metadata["coordinateTransformations"][0][0]["scale"][-2:] == [PX, PX]
    assert node.metadata["coordinateTransformations"][0][1]["translation"][-1] == pytest.approx(
        37.44
    )


def test_pyramid_levels_keep_the_field_translation(tmp_path):
    writer = OmeZarrPlateWriter(str(tmp_path / "p.ome.zarr"))
    writer.initialize(
        plate_name="p",
        wells=["A01"],
        fields_per_well=1,
        channel_names=["a"],
        pixel_size_um=PX,
        source_fingerprint="x",
    )
    data = np.ones((1, 1, 1, 64, 64), np.uint16)
    writer.write_field(
        "A01", 0, data, channel_names=["a"], pixel_size_um=PX, n_levels=2, translation_um=(10, 20)
    )
    datasets = _field_attrs(writer.url, "A/1/0")["ome"]["multiscales"][0]["datasets"]
    scale, translation = datasets[1]["coordinateTransformations"]
    assert scale["scale"][-2:] == [2 * PX, 2 * PX]
    # the field's offset plus the half-pixel shift of a 2x2 mean
    assert translation["translation"][-2:] == pytest.approx([10 + PX / 2, 20 + PX / 2])


def test_unknown_pixel_size_writes_no_spatial_unit(tmp_path):
    writer = OmeZarrPlateWriter(str(tmp_path / "p.ome.zarr"))
    writer.initialize(
        plate_name="p",
        wells=["A01"],
        fields_per_well=1,
        channel_names=["a"],
        pixel_size_um=None,
        source_fingerprint="x",
    )
    data = np.ones((1, 1, 2, 32, 32), np.uint16)
    writer.write_field("A01", 0, data, channel_names=["a"], pixel_size_um=None)
    attrs = _field_attrs(writer.url, "A/1/0")
    assert _units(attrs) == {"t": None, "c": None, "z": None, "y": None, "x": None}
    assert _transforms(attrs)[0] == [1.0, 1.0, 1.0, 1.0, 1.0]
    writer.finalize()
    assert validate_plate(writer.url) == []


# -- stitching from stage positions -------------------------------------------------------------


def _cut(canvas, true_positions, tile, rng):
    return np.stack(
        [
            np.clip(canvas[y : y + tile, x : x + tile] + rng.normal(0, 5, (tile, tile)), 0, None)
            for y, x in true_positions
        ]
    ).astype(np.uint16)


def test_stitching_from_irregular_stage_positions_matches_ground_truth():
    """Harmony's centre-first field order on a 3x3 grid with the top-right corner not taken:
    the tiles come in acquisition order, placed from their (jittered) stage positions."""
    rng = np.random.default_rng(21)
    tile, step = 128, 112
    canvas = synthetic_canvas((3 * step + tile + 20, 3 * step + tile + 20), rng)
    cells = [rc for rc in phenix_field_order(3, 3) if rc != (0, 2)]
    true = np.array(
        [(8 + r * step + rng.integers(-3, 4), 8 + c * step + rng.integers(-3, 4)) for r, c in cells]
    )
    nominal = np.array([(8 + r * step, 8 + c * step) for r, c in cells], dtype=float)
    tiles = _cut(canvas, true, tile, rng)
    positions, pairs = compute_tile_positions(tiles, nominal=nominal, max_shift=10)
    assert len(pairs) == 10  # 12 neighbour pairs of a 3x3 grid, minus the missing corner's 2
    expected = true - true.min(axis=0)
    np.testing.assert_allclose(positions - positions.min(axis=0), expected, atol=1.0)

    out, special = stitch_tiles(tiles[np.newaxis], site_positions_px=nominal.tolist())
    y, x = np.rint(positions[3]).astype(int)
    found = {row["site"]: (row["y"], row["x"]) for row in special["tile_positions"]}
    assert found[4] == pytest.approx(tuple(expected[3]), abs=1.0)
    np.testing.assert_allclose(
        out[0, 0, y + 40 : y + 80, x + 40 : x + 80], tiles[3, 40:80, 40:80], atol=1
    )


def test_stitching_isolated_field_stays_at_its_stage_position():
    rng = np.random.default_rng(3)
    tiles = rng.normal(300, 5, (3, 64, 64)).astype(np.float32)
    nominal = np.array([[0.0, 0.0], [0.0, 58.0], [300.0, 500.0]])  # the third touches nothing
    positions, _ = compute_tile_positions(tiles, nominal=nominal)
    np.testing.assert_allclose(positions, nominal, atol=0.01)


def test_compiler_passes_each_wells_positions_to_stitching(tmp_path):
    stage = {1: (0.0, 0.0), 2: (0.0, 41.6), 3: (41.6, 0.0)}  # an L of three fields, no grid
    layout = _positioned_layout(tmp_path / "P", stage=stage, size=64, write=False)
    stitch = load_pipeline({"name": "s", "steps": [{"name": "stitch", "func": "stitch_tiles"}]})
    plan = compile_plate(layout.model_copy(update={"grid": None}), stitch)
    meta = plan.plan("A01", 0).metadata
    assert meta["site_positions_px"] == [[0.0, 0.0], [64.0, 0.0], [0.0, 64.0]]
    assert plan.output.field_shape[0] >= 128 and plan.output.field_shape[1] >= 128
    # without positions and without a grid, stitching cannot be planned
    bare = make_layout(1, grid=None)
    with pytest.raises(CompileError, match="stage positions or the site grid"):
        compile_plate(bare, stitch)


# -- the default pipeline on any plate ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "skipped"),
    [
        ({"sites": 1, "grid": (1, 1)}, "one site per well"),
        ({"sites": 4, "grid": None}, "neither stage positions"),
        ({"sites": 1, "channels": 1, "z": 1, "grid": None, "overlap": None}, "one site per well"),
    ],
)
def test_default_pipeline_plans_on_any_plate(kwargs, skipped):
    plan = compile_plate(make_layout(2, **kwargs), load_pipeline("demo"))
    assert "stitch" not in plan.steps
    assert any(skipped in w for w in plan.warnings), plan.warnings


def test_default_pipeline_counts_the_first_channel_and_skips_sparse_fields(tmp_path):
    stage = {1: (0.0, 0.0), 2: (0.0, 2000.0)}  # fields far apart: nothing to stitch
    layout = _positioned_layout(tmp_path / "P", stage=stage, write=False)
    no_ch1 = layout.model_copy(
        update={
            "channels": (2,),
            "images": tuple(r for r in layout.images if r.channel == 2),
        }
    )
    plan = compile_plate(no_ch1, load_pipeline("demo"))
    assert "stitch" not in plan.steps
    assert any("do not overlap" in w for w in plan.warnings)
    count = plan.plan("A01", plan.steps.index("count"))
    assert set(count.function) == {"2"}
    assert plan.output.field_translations_um == {"A01": ((0.0, 0.0), (2000.0, 0.0))}


def test_user_pipelines_are_not_adapted():
    mine = load_pipeline({"name": "mine", "steps": [{"name": "stitch", "func": "stitch_tiles"}]})
    with pytest.raises(CompileError):
        compile_plate(make_layout(2, grid=None), mine)


# -- end to end through a real Prefect server -----------------------------------------------------


def _run_flow(plate: Path, **params):
    from prefect_hcs.runtime.flow import process_plate

    state = process_plate(plate=str(plate), return_state=True, **params)
    assert state.is_completed(), state.message
    return state.result()


@pytest.mark.server
def test_phenix_run_places_fields_at_their_stage_positions(prefect_server, tmp_path):
    plate = tmp_path / "PhenixPlate"
    truth = make_plate(
        str(plate), format="phenix", wells=["A01", "B02"], sites=4, channels=2, z=2, size=96
    )
    summary = _run_flow(plate, pipeline=BACKGROUND)
    url = summary["output"]
    assert validate_plate(url) == []
    px = truth["pixel_size_um"]
    for well, path in (("A01", "A/1"), ("B02", "B/2")):
        nominal = truth["wells"][well]["nominal_tile_positions"]  # site -> (y, x) px
        y0 = min(p[0] for p in nominal.values())
        x0 = min(p[1] for p in nominal.values())
        for site, (ny, nx) in nominal.items():
            attrs = _field_attrs(url, f"{path}/{int(site) - 1}")
            scale, translation = _transforms(attrs)
            assert scale[-2:] == [px, px]
            assert translation[-2:] == pytest.approx([(ny - y0) * px, (nx - x0) * px], abs=1e-3)
            assert _units(attrs)["x"] == "micrometer"
            assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == [
                truth["channel_names"]["1"],
                truth["channel_names"]["2"],
            ]
            assert [c["color"] for c in attrs["ome"]["omero"]["channels"]] == [
                "0000FF",
                "00FF00",
            ]

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = list(Reader(parse_url(f"{url}/B/2/3"))())[0]
    assert node.metadata["coordinateTransformations"][0][0]["scale"][-2:] == [px, px]


@pytest.mark.server
@pytest.mark.parametrize("fmt", ["imagexpress", "phenix"])
def test_default_pipeline_runs_on_a_single_site_single_channel_plate(prefect_server, tmp_path, fmt):
    plate = tmp_path / f"One_{fmt}"
    make_plate(str(plate), format=fmt, wells=["A01", "A02"], sites=1, channels=1, z=1, size=64)
    summary = _run_flow(plate)
    assert validate_plate(summary["output"]) == []
    assert "stitch.tile_positions" not in summary["tables"]
    assert "count.measurements" in summary["tables"]
