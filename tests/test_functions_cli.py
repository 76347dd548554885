"""`prefect-hcs functions`, docs/functions.md in sync, and a scikit-image pipeline run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prefect_hcs.processing.catalog import render_markdown
from prefect_hcs.testing.synthetic import make_plate

ROOT = Path(__file__).resolve().parent.parent

#: Five scikit-image functions (and a projection) in a pipeline file, as a user writes it.
SKIMAGE_PIPELINE = """
name: skimage-nuclei
steps:
  - name: project
    func: max_projection
    variable_components: [z]
  - name: smooth
    func: {name: skimage.filters.gaussian, kwargs: {sigma: 1.5, preserve_range: true}}
  - name: background
    func: {name: skimage.morphology.white_tophat, kwargs: {footprint: 15}}
  - name: mask
    func: skimage.filters.threshold_otsu
  - name: clean
    func: {name: skimage.morphology.remove_small_objects, kwargs: {max_size: 30}}
  - name: label
    func: skimage.measure.label
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("prefect-hcs")), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


def test_docs_page_is_in_sync_with_the_registry():
    page = (ROOT / "docs" / "functions.md").read_text()
    assert page == render_markdown(), "run: python scripts/gen_functions_doc.py"
    assert "### `skimage.filters.gaussian`" in page and "| `sigma` |" in page


def test_functions_list_json_and_filter():
    out = _cli("functions", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    names = [r["name"] for r in rows]
    assert len(names) >= 159 and names == sorted(names)
    assert {"count_nuclei", "skimage.filters.gaussian", "skimage.filters.rank.median"} <= set(names)
    rank = json.loads(
        _cli("functions", "list", "--source", "skimage.filters.rank", "--json").stdout
    )
    assert rank and all(r["name"].startswith("skimage.filters.rank.") for r in rank)
    own = json.loads(_cli("functions", "list", "--source", "builtin", "--json").stdout)
    assert {r["source"] for r in own} == {"prefect_hcs"}


def test_functions_show_prints_typed_kwargs():
    out = _cli("functions", "show", "skimage.filters.gaussian", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    params = {p["name"]: p for p in info["parameters"]}
    assert params["sigma"]["type"] == "float | Sequence" and params["sigma"]["default"] == "1.0"
    assert "'nearest'" in params["mode"]["type"] and "Gaussian" in params["sigma"]["description"]
    table = _cli("functions", "show", "skimage.filters.rank.mean")
    assert table.returncode == 0 and "uint8" in table.stdout and "footprint" in table.stdout


def test_functions_show_unknown_name_is_one_clear_line():
    out = _cli("functions", "show", "gausian")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "Did you mean 'skimage.filters.gaussian'" in " ".join(out.stderr.split())


def test_plan_rejects_a_bad_skimage_kwarg_before_reading_pixels(tmp_path):
    plate = tmp_path / "P"
    make_plate(str(plate), format="imagexpress", wells=["A01"], sites=1, channels=1, z=1, size=64)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SKIMAGE_PIPELINE.replace("sigma: 1.5", "sigmaa: 1.5"))
    out = _cli("plan", str(plate), "--pipeline", str(bad))
    assert out.returncode != 0
    text = " ".join(out.stderr.split())
    assert "sigmaa: unknown kwarg (did you mean 'sigma'?)" in text, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.server
def test_skimage_pipeline_runs_end_to_end(prefect_server, tmp_path):
    """Six steps, five of them scikit-image functions, through a real Prefect server; the label
    image counts the synthetic nuclei."""
    from prefect_hcs.formats.omezarr import read_well_image
    from prefect_hcs.runtime.flow import process_plate

    plate = tmp_path / "Sk"
    truth = make_plate(
        str(plate),
        format="imagexpress",
        wells=["A01", "B02"],
        sites=1,
        channels=1,
        z=2,
        size=256,
        seed=3,
    )
    pipeline_file = tmp_path / "skimage.yaml"
    pipeline_file.write_text(SKIMAGE_PIPELINE)
    state = process_plate(plate=str(plate), pipeline=str(pipeline_file), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    for well in ("A01", "B02"):
        labels = np.asarray(read_well_image(summary["output"], well, 0))
        found = len(np.unique(labels[labels > 0]))
        true = truth["wells"][well]["nuclei"]
        assert abs(found - true) <= max(2, 0.15 * true), (well, found, true)
