"""Plate-level illumination correction: estimate vs a known vignetting, planning, reuse, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from prefect_hcs.processing import InvalidKwargsError, validate_kwargs
from prefect_hcs.processing.illumination import estimate_flatfield, illumination_correct
from prefect_hcs.testing.synthetic import make_plate

DARK = 100.0
PIPELINE = """
name: flatfield
steps:
  - name: correct
    func: {name: illumination_correct, kwargs: {dark_offset: 100}}
"""


#: 16 wells × 4 sites = 64 fields per channel: enough for the median to average out the synthetic
#: plate's own per-well background gradients (with 4 wells channel 2 is off by ~5 %).
WELLS16 = [f"{r}{c:02d}" for r in "ABCD" for c in range(1, 5)]


def _vignetting(shape: tuple[int, int]) -> np.ndarray:
    """Radial fall-off, 1.0 at the centre to ~0.55 in the corners, off-centre like real optics."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = shape[0] * 0.45, shape[1] * 0.55
    r2 = ((yy - cy) / shape[0]) ** 2 + ((xx - cx) / shape[1]) ** 2
    return 1.0 - 0.8 * r2


def _vignette_plate(plate: Path, flat: np.ndarray) -> int:
    """Rewrite every TIFF of a plate in place as dark + flat * signal (uint16)."""
    files = sorted(plate.rglob("*.tif"))
    for f in files:
        clean = tifffile.imread(f).astype(np.float64)
        tifffile.imwrite(f, np.round(DARK + flat * clean).astype(np.uint16))
    return len(files)


def _plate_pair(tmp_path: Path, wells: list[str]) -> tuple[Path, Path, np.ndarray]:
    kwargs = dict(format="imagexpress", wells=wells, sites=4, channels=2, z=1, size=128, seed=4)
    make_plate(str(tmp_path / "clean" / "P"), **kwargs)
    make_plate(str(tmp_path / "vign" / "P"), **kwargs)
    flat = _vignetting((128, 128))
    assert _vignette_plate(tmp_path / "vign" / "P", flat) == len(wells) * 4 * 2
    return tmp_path / "clean" / "P", tmp_path / "vign" / "P", flat


def _files(plate: Path, channel: int) -> dict[tuple[str, int], Path]:
    """{(well, site): TIFF} of one channel (MetaXpress names: <plate>_<well>_s<site>_w<c><GUID>)."""
    out = {}
    for f in plate.rglob(f"*_w{channel}*.tif"):
        _, well, site, _ = f.name.split("_", 3)
        out[(well, int(site[1:]))] = f
    return out


def _error(corrected: np.ndarray, clean: np.ndarray) -> float:
    """Mean |ratio - 1| of corrected / clean pixels, the ratio normalised by its median."""
    mask = clean > np.percentile(clean, 5)
    ratio = corrected[mask] / clean[mask]
    return float(np.mean(np.abs(ratio / np.median(ratio) - 1)))


def test_estimate_recovers_a_known_vignetting_within_2_percent(tmp_path):
    clean_dir, vign_dir, flat = _plate_pair(tmp_path, WELLS16)
    for channel in (1, 2):
        vign_files, clean_files = _files(vign_dir, channel), _files(clean_dir, channel)
        keys = sorted(vign_files)
        assert keys == sorted(clean_files) and len(keys) == 64
        planes = [tifffile.imread(vign_files[k]) for k in keys]
        clean = [tifffile.imread(clean_files[k]) for k in keys]
        est = estimate_flatfield(planes, dark_offset=DARK)
        assert est.shape == (128, 128) and abs(float(est.mean()) - 1) < 1e-5
        true = flat / flat.mean()
        assert float(np.mean(np.abs(est / true - 1))) < 0.02
        stack = np.stack(planes).astype(np.float64)
        before = np.mean(
            [_error(p - DARK, c.astype(float)) for p, c in zip(stack, clean, strict=True)]
        )
        after = np.mean(
            [
                _error(
                    illumination_correct(p[None], {"flatfield": est[None]}, DARK)[0],
                    c.astype(float),
                )
                for p, c in zip(stack, clean, strict=True)
            ]
        )
        assert before > 0.05, before  # the vignetting is real (4x the bar below)
        assert after < 0.02, after


def test_kwargs_are_checked_at_compile_time():
    with pytest.raises(InvalidKwargsError, match="dark_offset: must be >= 0"):
        validate_kwargs("illumination_correct", {"dark_offset": -1})
    with pytest.raises(InvalidKwargsError, match="illumination: metadata input"):
        validate_kwargs("illumination_correct", {"illumination": {}})


def test_compiler_plans_the_plate_step_and_well_fingerprints_include_it(tmp_path):
    from prefect_hcs.runtime.compile import compile_from_parameters

    _, vign, _ = _plate_pair(tmp_path, ["A01", "A02", "B01", "B02"])
    pipe = tmp_path / "p.yaml"
    pipe.write_text(PIPELINE)
    plan = compile_from_parameters(str(vign), str(pipe), None, None, {})
    (step,) = plan.plate_steps
    assert step.kind == "illumination" and step.wells == ("A01", "A02", "B01", "B02")
    assert len(step.source_planes) == 4 * 4 * 2 and step.channels == (1, 2)
    for p in plan.step_plans:
        assert p.metadata["illumination"] == {
            "url": step.result_url,
            "fingerprint": step.fingerprint,
        }
    shown = plan.summary_json()["plate_steps"]  # what `prefect-hcs plan --json` prints
    assert shown[0]["kind"] == "illumination" and shown[0]["fingerprint"] == step.fingerprint
    assert plan.task_count == 1 + 4 + len(plan.chunks)  # the plate-step task is counted
    pipe.write_text(PIPELINE.replace("dark_offset: 100", "dark_offset: 100, sample_wells: 2"))
    sampled = compile_from_parameters(str(vign), str(pipe), None, None, {})
    assert sampled.plate_steps[0].wells == ("A01", "B01")
    assert sampled.plate_steps[0].fingerprint != step.fingerprint
    assert {p.fingerprint for p in sampled.step_plans}.isdisjoint(
        p.fingerprint for p in plan.step_plans
    )


def test_stored_result_is_reused_until_a_source_file_changes(tmp_path):
    from prefect_hcs.runtime.compile import compile_from_parameters
    from prefect_hcs.runtime.plate_steps import resolve_plate_inputs, run_plate_steps

    _, vign, _ = _plate_pair(tmp_path, ["A01", "B02"])
    pipe = tmp_path / "p.yaml"
    pipe.write_text(PIPELINE)
    plan = compile_from_parameters(str(vign), str(pipe), None, None, {})
    assert run_plate_steps(plan)[0].startswith("illumination: estimated from 16 planes of 2 wells")
    assert run_plate_steps(plan)[0].startswith("illumination: reused")
    loaded = resolve_plate_inputs(plan.step_plans[0], {})
    assert loaded.metadata["illumination"]["flatfield"].shape == (2, 128, 128)
    f = next(iter(_files(vign, 1).values()))
    tifffile.imwrite(f, tifffile.imread(f)[::-1].copy())  # a replaced source file
    assert run_plate_steps(plan)[0].startswith("illumination: estimated")


@pytest.mark.server
def test_plate_run_corrects_vignetting_end_to_end(prefect_server, tmp_path):
    from prefect_hcs.formats.omezarr import read_well_image
    from prefect_hcs.runtime.flow import process_plate

    wells = WELLS16
    clean_dir, vign_dir, _ = _plate_pair(tmp_path, wells)
    pipe = tmp_path / "p.yaml"
    pipe.write_text(PIPELINE)
    state = process_plate(plate=str(vign_dir), pipeline=str(pipe), return_state=True)
    assert state.is_completed(), state.message
    out = state.result()["output"]
    errors: dict[int, list[float]] = {1: [], 2: []}
    for well in wells:
        for site in range(4):
            img = np.asarray(read_well_image(out, well, site))[0, :, 0]
            assert img.dtype == np.float32
            for c in (1, 2):
                clean = tifffile.imread(_files(clean_dir, c)[(well, site + 1)])
                errors[c].append(_error(img[c - 1], clean.astype(float)))
    for c, errs in errors.items():
        assert float(np.mean(errs)) < 0.02, (c, errs)


def test_a_changed_source_file_makes_the_stored_result_stale(tmp_path):
    from prefect_hcs.runtime.compile import compile_from_parameters
    from prefect_hcs.runtime.plate_steps import run_plate_steps, stale_plate_results

    _, vign, _ = _plate_pair(tmp_path, ["A01", "B02"])
    pipe = tmp_path / "p.yaml"
    pipe.write_text(PIPELINE)
    plan = compile_from_parameters(str(vign), str(pipe), None, None, {})
    url = plan.plate_steps[0].result_url
    assert stale_plate_results(plan) == {url}  # never computed
    run_plate_steps(plan)
    assert stale_plate_results(plan) == set()
    f = _files(vign, 2)[("B02", 3)]
    tifffile.imwrite(f, tifffile.imread(f)[::-1].copy())
    assert stale_plate_results(plan) == {url}


@pytest.mark.server
def test_resume_recomputes_every_well_corrected_with_a_stale_flatfield(prefect_server, tmp_path):
    """A replaced plane in B02 changes the flat-field, so A01 (its own files unchanged) is
    recomputed too; a rerun with nothing changed skips both."""
    from prefect_hcs.runtime.flow import process_plate

    _, vign, _ = _plate_pair(tmp_path, ["A01", "B02"])
    pipe = tmp_path / "p.yaml"
    pipe.write_text(PIPELINE)

    def run() -> dict:
        state = process_plate(plate=str(vign), pipeline=str(pipe), return_state=True)
        assert state.is_completed(), state.message
        return state.result()

    assert run()["wells_skipped"] == []
    assert run()["wells_skipped"] == ["A01", "B02"]
    f = _files(vign, 2)[("B02", 3)]
    tifffile.imwrite(f, tifffile.imread(f)[::-1].copy())
    assert run()["wells_skipped"] == []
    assert run()["wells_skipped"] == ["A01", "B02"]
