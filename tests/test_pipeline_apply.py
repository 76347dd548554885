"""Applying a step plan to a well's pixels: grouping, pass-through, reductions, tables, errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_layout

import prefect_hcs.processing  # noqa: F401
from prefect_hcs.pipeline.apply import StepExecutionError, WellData, apply_step
from prefect_hcs.pipeline.compiler import compile_plate
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.processing.registry import register


def _data(t=1, c=2, z=3, s=4, y=32, x=32, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 1000, size=(t, c, z, s, y, x)).astype(np.uint16)
    coords = {"timepoint": tuple(range(1, t + 1)), "channel": tuple(range(1, c + 1)),
              "z": tuple(range(1, z + 1)), "site": tuple(range(1, s + 1))}  # fmt: skip
    return WellData(arr, coords)


def _plan(steps, index=0):
    plan = compile_plate(make_layout(1), load_pipeline({"name": "t", "steps": steps}))
    return plan.plan("A01", index)


def test_projection_over_z_matches_numpy():
    data = _data()
    out, tables = apply_step(
        data, _plan([{"func": "max_projection", "variable_components": ["z"]}])
    )
    np.testing.assert_array_equal(out.array, data.array.max(axis=2, keepdims=True))
    assert out.coords["z"] == (1,) and tables == {}


def test_mapping_pattern_passes_unmapped_groups_through_and_labels_tables():
    data = _data()
    step = {"func": {"1": "count_nuclei"}, "group_by": "channel", "variable_components": ["site"]}
    out, tables = apply_step(data, _plan([step]))
    np.testing.assert_array_equal(out.array, data.array)
    rows = tables["measurements"]
    assert {r["channel"] for r in rows} == {1}  # only the mapped channel was measured
    assert {r["site"] for r in rows} == {1, 2, 3, 4} and {r["z"] for r in rows} == {1, 2, 3}
    assert all(r["well"] == "A01" for r in rows)


def test_chain_applies_in_order():
    data = _data(c=1, z=2, s=1)
    step = {"func": ["max_projection", {"name": "percentile_normalize", "kwargs": {"low": 0, "high": 100}}],
            "variable_components": ["z"]}  # fmt: skip
    out, _ = apply_step(data, _plan([step]))
    proj = data.array.max(axis=2, keepdims=True).astype(float)
    expected = (proj - proj.min()) / (proj.max() - proj.min()) * 65535
    np.testing.assert_allclose(out.array, np.round(expected), atol=1)


def test_step_that_does_not_apply_to_the_well_is_a_no_op():
    data = _data()
    plan = _plan(
        [{"func": "max_projection", "config": {"step_well_filter_config": {"well_filter": "B01"}}}]
    )
    assert plan.applies is False
    out, _ = apply_step(data, plan)
    assert out is data


@register("test_bad_shape", variable_components=("site",))
def _bad_shape(stack: np.ndarray) -> np.ndarray:
    return stack[:, :2]  # drops Y rows but keeps ndim: allowed; then grows the site axis:


@register("test_grows_axis", variable_components=("site",))
def _grows(stack: np.ndarray) -> np.ndarray:
    return np.concatenate([stack, stack])


@register("test_raises", variable_components=("site",))
def _raises(stack: np.ndarray) -> np.ndarray:
    raise ValueError("kaboom")


def test_function_errors_name_the_well_step_and_group():
    with pytest.raises(StepExecutionError, match=r"well A01, step 0 'test_raises', .*kaboom"):
        apply_step(_data(), _plan([{"func": "test_raises"}]))


def test_an_axis_may_only_keep_its_length_or_collapse():
    with pytest.raises(StepExecutionError, match="went from 4 to 8"):
        apply_step(_data(), _plan([{"func": "test_grows_axis"}]))
