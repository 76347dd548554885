"""Small builders shared by tests."""

from __future__ import annotations

from prefect_hcs.formats.layout import ImageRef, PlateLayout
from prefect_hcs.formats.wells import well_id


def make_layout(
    n_wells: int = 4,
    *,
    fmt: str = "imagexpress",
    sites: int = 4,
    channels: int = 2,
    z: int = 3,
    url: str = "/data/plates/P1",
    grid: tuple[int, int] | None = (2, 2),
    overlap: float | None = 0.1,
) -> PlateLayout:
    """A plate layout built in memory (the compiler never reads pixels, so no files needed)."""
    wells = tuple(well_id(i // 24, i % 24) for i in range(n_wells))
    plate_id = "plate_7" if fmt == "omero" else url.rstrip("/").rsplit("/", 1)[-1]
    images = []
    for w in wells:
        for s in range(1, sites + 1):
            for c in range(1, channels + 1):
                for k in range(1, z + 1):
                    path = (
                        f"plate_7/{w}/s{s:03d}/{w}_s{s:03d}_w{c}_z{k:03d}_t001.tif"
                        if fmt == "omero"
                        else f"{url}/TimePoint_1/ZStep_{k}/P1_{w}_s{s}_w{c}.tif"
                    )
                    images.append(ImageRef(well=w, site=s, channel=c, z=k, timepoint=1, path=path))
    return PlateLayout(
        plate_id=plate_id,
        format=fmt,  # type: ignore[arg-type]
        url="omero://plate_7" if fmt == "omero" else url,
        wells=wells,
        sites=tuple(range(1, sites + 1)),
        channels=tuple(range(1, channels + 1)),
        z_planes=tuple(range(1, z + 1)),
        timepoints=(1,),
        grid=grid,
        tile_overlap=overlap,
        pixel_size_um=0.65,
        channel_names={1: "DAPI", 2: "FITC"},
        image_shape=(256, 256),
        dtype="uint16",
        images=tuple(images),
    )


def wait_for_task_runs(flow_run_id, *, min_count: int = 1, timeout: float = 60, steps_only=False):
    """Task runs of a flow run, polled until at least `min_count` exist and all are final.

    The server records task runs asynchronously, so tests poll instead of asserting at once.
    `steps_only` keeps the `run-steps` tasks (named "<first step>→<last step> · <wells>").
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    runs: list = []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            if steps_only:
                runs = [r for r in runs if "·" in r.name]
            if len(runs) >= min_count and all(r.state and r.state.is_final() for r in runs):
                return runs
            time.sleep(1)
    return runs


def assert_same_outputs(a: dict, b: dict, wells) -> None:
    """Two plate runs' summaries wrote the same pixels for every well and the same table bytes."""
    import numpy as np

    from prefect_hcs.formats.omezarr import read_well_image
    from prefect_hcs.runtime import io as hio

    for well in wells:
        np.testing.assert_array_equal(
            read_well_image(a["output"], well, 0), read_well_image(b["output"], well, 0)
        )
    assert set(a["tables"]) == set(b["tables"])
    for name in a["tables"]:
        assert hio.read_bytes(a["tables"][name]) == hio.read_bytes(b["tables"][name]), name
