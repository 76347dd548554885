"""`prefect-hcs make-plate | demo`: synthetic plates and the demo run.

The only CLI module that uses `prefect_hcs.testing` (synthetic plates, the OMERO stand-in), which
no production path imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from prefect_hcs.cli_common import console, fail, user_errors
from prefect_hcs.cli_runs import print_summary, run_flow

__all__ = ["demo_cmd", "make_plate_cmd", "parse_wells"]


def make_plate_cmd(
    out: Annotated[str, typer.Argument(help="Folder (or fsspec URL) to write the plate into.")],
    format: Annotated[
        str, typer.Option(help="imagexpress, phenix, operetta or cellvoyager.")
    ] = "imagexpress",
    variant: Annotated[
        str | None,
        typer.Option(
            help="phenix/operetta: the Harmony index, v5 (Index.idx.xml) or v7 (Index.xml); "
            "imagexpress: 'acquisition' (instrument folder, no .HTD) or 'export' (HTD, "
            "TimePoint_/ZStep_ folders), MetaSeries XML + LZW. Default: the classic plate."
        ),
    ] = None,
    wells: Annotated[
        str, typer.Option(help="Comma-separated wells, or a count N.")
    ] = "A01,A02,B01,B02",
    sites: Annotated[int, typer.Option(help="Sites per well (a grid: 4 = 2x2).")] = 4,
    channels: Annotated[int, typer.Option()] = 2,
    z: Annotated[int, typer.Option(help="z-planes.")] = 3,
    size: Annotated[int, typer.Option(help="Tile edge in pixels.")] = 256,
    overlap: Annotated[float, typer.Option()] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
    timepoints: Annotated[int, typer.Option(help="Timepoints (with --variant).")] = 1,
    mixed: Annotated[
        bool,
        typer.Option(
            help="With --variant: a mixed acquisition (DAPI stack + projection, FITC one plane, "
            "Cy5 projection only, TexasRed only at timepoint 1)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a plate make-plate wrote there before (nothing else).")
    ] = False,
) -> None:
    """Write a realistic synthetic plate plus ground_truth.json (nuclei counts, tile positions)."""
    from prefect_hcs.testing.generators import make_any_plate
    from prefect_hcs.testing.plate_target import write_plate_into

    try:
        well_list = parse_wells(wells)
        if format == "imagexpress" and variant is not None:
            write_plate_into(
                out,
                overwrite,
                lambda url: _make_metaxpress(
                    url,
                    variant,
                    well_list,
                    sites,
                    channels,
                    z,
                    timepoints,
                    size,
                    overlap,
                    seed,
                    mixed,
                ),  # fmt: skip
            )
            return
    except user_errors() as exc:
        fail(str(exc))
    options = dict(sites=sites, channels=channels, z=z, size=size, overlap=overlap, seed=seed)
    handled: tuple[type[BaseException], ...] = (
        *user_errors(),
        ValueError,
        TypeError,
    )  # incl. the generators' argument checks
    try:
        truth = write_plate_into(
            out,
            overwrite,
            lambda url: make_any_plate(
                url, format=format, variant=variant, wells=well_list, **options
            ),
        )
    except handled as exc:
        if not isinstance(exc, user_errors()):
            fail(f"make-plate: {exc}")
        fail(str(exc))
    total = sum(w["nuclei"] for w in truth["wells"].values())
    console.print(
        f"wrote a {format} plate: {len(well_list)} wells × {sites} sites × {channels} channels × "
        f"{z} z at {size}² → {out} ({total} nuclei; ground truth in ground_truth.json)"
    )


def _make_metaxpress(
    out: str, variant: str, wells: list[str], sites: int, channels: int, z: int,
    timepoints: int, size: int, overlap: float, seed: int, mixed: bool,
) -> None:  # fmt: skip
    from prefect_hcs.testing.synthetic_imagexpress import MIXED_CHANNELS, make_imagexpress_plate

    if variant not in ("acquisition", "export"):
        fail(f"--variant {variant!r} is not valid for imagexpress: use acquisition or export")
    try:
        truth = make_imagexpress_plate(
            out, variant=variant, wells=wells, sites=sites, z=z, timepoints=timepoints,  # type: ignore[arg-type]
            channels=MIXED_CHANNELS if mixed else channels, size=size, overlap=overlap, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        fail(f"make-plate: {exc}")
    console.print(
        f"wrote a {truth['variant']} plate: {len(wells)} wells × {sites} sites × "
        f"{len(truth['channels'])} channels × {z} z × {timepoints} t at {size}² → "
        f"{truth['plate_path']} (ground truth in {out}/ground_truth.json)"
    )


def parse_wells(spec: str) -> list[str]:
    """``--wells``: a comma-separated list of well names, or a count N (row-major from A01)."""
    from prefect_hcs.formats.layout import PlateError
    from prefect_hcs.formats.wells import WellId, WellIdError, well_id

    if spec.isdigit():
        n = int(spec)
        cols = 12 if n > 8 else n
        return [well_id(i // cols, i % cols) for i in range(n)]
    try:
        return [WellId.parse(w).name for w in spec.split(",") if w.strip()]
    except WellIdError as exc:
        raise PlateError(f"--wells: {exc}") from None


def demo_cmd(
    out: Annotated[
        Path, typer.Option(help="Everything the demo writes goes under this folder.")
    ] = Path("hcs-demo"),
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    omero: Annotated[
        bool, typer.Option("--omero", help="Use the plate from an OMERO stand-in (under --out).")
    ] = False,
) -> None:
    """Make a small synthetic plate and process it as a Prefect flow; print where outputs are."""
    from prefect_hcs.formats.validate_zarr import validate_plate
    from prefect_hcs.runtime import io as hio
    from prefect_hcs.testing.synthetic import make_plate

    out = out.resolve()
    if omero:
        from prefect_hcs.testing.omero_demo import describe_omero_outputs, prepare_omero_demo

        d = prepare_omero_demo(out)
        console.print(f"OMERO stand-in at {d['standin_dir']}; plate {d['plate']}")
        summary, url = run_flow(
            d["plate"],
            "demo",
            d["global_config"],
            d["pipeline_config"],
            d["storage_options"],
            False,
            not no_progress,  # fmt: skip
        )
        print_summary(summary, url)
        for line in describe_omero_outputs(d["plate"], d["storage_options"]):
            console.print(f"  {line}")
        return
    plate = out / "DemoPlate"
    if not (plate / "ground_truth.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        make_plate(
            str(plate),
            format="imagexpress",
            wells=["A01", "A02", "A03", "B01", "B02", "B03"],
            sites=4,
            channels=2,
            z=3,
            size=256,
            seed=7,
            plate_name="DemoPlate",  # fmt: skip
        )
        console.print(f"wrote a synthetic ImageXpress plate: {plate}")
    summary, url = run_flow(str(plate), "demo", None, None, {}, False, not no_progress)
    print_summary(summary, url)
    problems = validate_plate(summary["output"])
    if problems:
        fail("the output did not validate:\n" + "\n".join(problems), 1)
    truth = json.loads((plate / "ground_truth.json").read_text())

    rows = hio.csv_to_rows(hio.read_bytes(summary["tables"]["count.measurements"]))
    counted = {r["well"]: int(r["nuclei_count"]) for r in rows}
    pairs = ", ".join(f"{w} {counted[w]}/{truth['wells'][w]['nuclei']}" for w in sorted(counted))
    console.print(f"  nuclei counted/true: {pairs}")
    console.print(
        "  validated with yaozarrs + ome-zarr-models + ome-zarr-py. Open it with:\n"
        f"    python -c \"import zarr; print(zarr.open_group('{summary['output']}').attrs['ome'])\"\n"
        f"    napari --plugin napari-ome-zarr {summary['output']}   (if napari is installed)"
    )
