"""What `prefect-hcs demo --omero` needs: a synthetic plate imported into an OMERO stand-in.

There is no OMERO server here, so the demo puts a synthetic ImageXpress plate into the in-process
stand-in (`prefect_hcs.testing.omero_standin`, installed in this process by `prepare_omero_demo`) and writes the two config layers of the user's seed
bug: a global layer with ``vfs_config.materialization_backend: omero`` and a pipeline layer that
enables checkpoints and leaves ``vfs_config`` unset. Running the demo pipeline with them must put
every checkpoint, table and final image into OMERO as FileAnnotations and nothing on local disk.

Everything lives under one folder and is reused on the next call (same plate id), so running the
demo twice does not pile up copies of the plate in the stand-in. No Prefect import here: the CLI
runs the flow with the returned parameters.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

PLATE_NAME = "DemoPlate"
USER = "demo"
GROUP = "demo"
GLOBAL_YAML = """\
# Global layer of the OMERO demo: checkpoints go to OMERO as FileAnnotations.
vfs_config:
  materialization_backend: omero
"""
PIPELINE_YAML = """\
# Pipeline layer of the OMERO demo: vfs_config is left unset on purpose, so the global layer's
# materialization_backend is inherited (the situation of the seed bug report).
step_materialization_config:
  enabled: true
"""


def prepare_omero_demo(
    out: Path,
    *,
    wells: tuple[str, ...] = ("A01", "A02", "A03", "B01", "B02", "B03"),
    size: int = 256,
) -> dict[str, Any]:
    """Make (or reuse) the demo's plate, stand-in, user and config files under `out`.

    Returns the `process-plate` parameters: ``plate`` (``omero://plate_<id>``), ``storage_options``
    (JSON-able, no secret: the demo user has no password), ``global_config`` and
    ``pipeline_config`` (YAML paths), plus ``standin_dir`` and ``ground_truth`` (the synthetic
    plate's truth, to compare nuclei counts).
    """
    from prefect_hcs.testing.omero_standin import StandinServer, install_standin, standin_options

    install_standin()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    disk_plate = out / PLATE_NAME
    truth = disk_plate / "ground_truth.json"
    if not truth.exists():
        from prefect_hcs.testing.synthetic import make_plate

        make_plate(
            str(disk_plate),
            format="imagexpress",
            wells=list(wells),
            sites=4,
            channels=2,
            z=3,
            size=size,
            seed=7,
            plate_name=PLATE_NAME,
        )
    standin_dir = out / "omero-standin"
    server = StandinServer.create(standin_dir)  # reopens an existing stand-in unchanged
    server.add_user(USER, group=GROUP)
    plate_id = _find_plate(standin_dir, PLATE_NAME, GROUP)
    if plate_id is None:
        from prefect_hcs.formats.detect import open_plate

        plate_id = server.import_plate_from_layout(
            open_plate(str(disk_plate)), group=GROUP, name=PLATE_NAME, owner=USER
        )
    global_config = out / "omero-global.yaml"
    pipeline_config = out / "omero-pipeline.yaml"
    global_config.write_text(GLOBAL_YAML)
    pipeline_config.write_text(PIPELINE_YAML)
    return {
        "plate": f"omero://plate_{plate_id}",
        "storage_options": standin_options(standin_dir, USER, group=GROUP),
        "global_config": str(global_config),
        "pipeline_config": str(pipeline_config),
        "standin_dir": str(standin_dir),
        "ground_truth": str(truth),
    }


def _find_plate(standin_dir: Path, name: str, group: str) -> int | None:
    """Id of the newest plate called `name` in `group`, if it was imported before.

    The adapter API (like OMERO's) addresses plates by id only, so this looks in the stand-in's
    own database, read-only.
    """
    from prefect_hcs.testing.omero_standin import DB_NAME

    uri = f"{(standin_dir / DB_NAME).as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        row = db.execute(
            "SELECT p.id FROM plates p JOIN groups g ON g.id = p.group_id "
            "WHERE p.name = ? AND g.name = ? ORDER BY p.id DESC LIMIT 1",
            (name, group),
        ).fetchone()
    return None if row is None else int(row[0])


def describe_omero_outputs(plate_url: str, storage_options: dict[str, Any]) -> list[str]:
    """One line per FileAnnotation the pipeline attached to the plate, its wells or its images.

    Listed live through the ``omero`` filesystem (what a user would see in OMERO.web), so the
    demo shows where results went rather than where they were meant to go.
    """
    from prefect_hcs.formats.wells import well_id
    from prefect_hcs.storage.omero_fs import OmeroFileSystem
    from prefect_hcs.storage.omero_paths import OUTPUTS, parse, plate_path, site_path, well_path

    fs = OmeroFileSystem(**storage_options)
    plate_id = parse(plate_url).plate_id
    folders = [f"{plate_path(plate_id)}/{OUTPUTS}"]
    for well in fs.plate(plate_id).wells:
        name = well_id(well.row, well.column)
        folders.append(f"{well_path(plate_id, name)}/{OUTPUTS}")
        folders += [
            f"{site_path(plate_id, name, i + 1)}/{OUTPUTS}" for i in range(len(well.images))
        ]
    lines = []
    for folder in folders:
        for path, info in sorted(fs.find(folder, detail=True).items()):
            if "/." in path:  # bookkeeping (completion markers), not a result
                continue
            lines.append(
                f"omero://{path}  ({info['size']:,} bytes, FileAnnotation {info['annotation_id']})"
            )
    return lines
