"""scikit-image functions registered automatically: rules, typed kwargs, and a run of each one.

Every registered function is run on a stack of two small 2-D planes of every dtype it supports;
required kwargs get the example values below (a registered function with a required kwarg and no
example fails the test, so the list cannot fall behind the registry).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

from prefect_hcs.processing import (
    InvalidKwargsError,
    UnknownFunctionError,
    all_specs,
    get_function,
    skimage_functions,
    validate_kwargs,
)

SKIMAGE = [s for s in all_specs() if s.source.startswith("skimage.")]
ALL_DTYPES = ("uint8", "uint16", "float32", "float64")

#: Values for required kwargs (what a pipeline file would hold).
EXAMPLES: dict[str, dict[str, Any]] = {
    "skimage.filters.apply_hysteresis_threshold": {"low": 0.2, "high": 0.5},
    "skimage.filters.difference_of_gaussians": {"low_sigma": 1.0},
    "skimage.filters.gabor": {"frequency": 0.2},
    "skimage.morphology.flood": {"seed_point": [5, 5]},
    "skimage.segmentation.flood": {"seed_point": [5, 5]},
    "skimage.morphology.h_maxima": {"h": 2},
    "skimage.morphology.h_minima": {"h": 2},
    "skimage.morphology.isotropic_closing": {"radius": 2},
    "skimage.morphology.isotropic_dilation": {"radius": 2},
    "skimage.morphology.isotropic_erosion": {"radius": 2},
    "skimage.morphology.isotropic_opening": {"radius": 2},
    "skimage.morphology.remove_objects_by_distance": {"min_distance": 3},
    "skimage.segmentation.morphological_chan_vese": {"num_iter": 3},
    "skimage.segmentation.morphological_geodesic_active_contour": {"num_iter": 3},
    "skimage.feature.local_binary_pattern": {"P": 8, "R": 1.0},
    "skimage.feature.draw_multiblock_lbp": {"r": 0, "c": 0, "width": 3, "height": 3},
    "skimage.transform.rescale": {"scale": 0.5},
    "skimage.transform.resize": {"output_shape": [16, 20]},
    "skimage.transform.resize_local_mean": {"output_shape": [16, 20]},
    "skimage.transform.rotate": {"angle": 30.0},
    "skimage.transform.downscale_local_mean": {"factors": [2, 2]},
    "skimage.measure.block_reduce": {"block_size": [2, 2]},
    "skimage.morphology.flood_fill": {"seed_point": [5, 5], "new_value": 3},
    "skimage.segmentation.flood_fill": {"seed_point": [5, 5], "new_value": 3},
    "skimage.restoration.richardson_lucy": {"psf": [[0, 1, 0], [1, 4, 1], [0, 1, 0]]},
    "skimage.restoration.wiener": {"psf": [[0, 1, 0], [1, 4, 1], [0, 1, 0]], "balance": 0.1},
    "skimage.filters.correlate_sparse": {"kernel": [[0, 1, 0], [1, -4, 1], [0, 1, 0]]},
    "skimage.feature.match_template": {"template": [[0, 1, 0], [1, 1, 1], [0, 1, 0]]},
    "skimage.util.crop": {"crop_width": [[2, 3], [4, 1]]},
    "skimage.util.random_noise": {"rng": 0},
}


#: Documented to return NaN where the result is undefined (flat regions).
NAN_WHERE_UNDEFINED = {"skimage.feature.shape_index"}


def _plane(dtype: str) -> np.ndarray:
    """Two blobs on a dim ramp, scaled to the dtype's usual range (a mask or labels for bool and
    32-bit integers, the inputs of mask/label functions)."""
    yy, xx = np.mgrid[:32, :40]
    img = 0.1 + 0.1 * xx / 40
    for cy, cx, r in ((10, 10, 5), (22, 28, 6)):
        img += 0.7 * (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r)
    img = ndi.gaussian_filter(img, 1.0)
    if dtype == "bool":
        return img > 0.4
    if dtype in ("int32", "uint32"):
        return ndi.label(img > 0.4)[0].astype(dtype)
    scale = {"uint8": 250, "uint16": 4000}.get(dtype, 1.0)
    return (img * scale).astype(dtype)


def _kwargs(spec) -> dict[str, Any]:
    kwargs = dict(EXAMPLES.get(spec.name, {}))
    for name, p in spec.parameters.items():
        if name == "footprint" and p.default is inspect.Parameter.empty:
            kwargs["footprint"] = 2
    return kwargs


def test_at_least_150_functions_with_typed_kwargs():
    assert len(SKIMAGE) >= 150, len(SKIMAGE)
    # every kwarg a pipeline can give is checked at compile time (none falls back to Any)
    unchecked = {
        (s.name, p.name)
        for s in SKIMAGE
        for p in s.parameters.values()
        if p.name != "stack" and p.annotation in (inspect.Parameter.empty, Any)
    }
    assert not unchecked, sorted(unchecked)
    typed = [
        p
        for s in SKIMAGE
        for p in s.parameters.values()
        if p.annotation not in (inspect.Parameter.empty, Any)
    ]
    assert len(typed) >= 300
    for module in ("filters", "morphology", "exposure", "restoration", "segmentation"):
        assert any(s.source.startswith(f"skimage.{module}.") for s in SKIMAGE), module
    for module in ("feature", "transform"):
        assert any(s.source.startswith(f"skimage.{module}.") for s in SKIMAGE), module


@pytest.mark.parametrize("spec", SKIMAGE, ids=[s.name for s in SKIMAGE])
def test_each_function_runs_per_plane_on_every_supported_dtype(spec):
    kwargs = validate_kwargs(spec.name, _kwargs(spec))  # the compile-time check accepts them
    for dtype in spec.input_dtypes or ALL_DTYPES:
        stack = np.stack([_plane(dtype), _plane(dtype)[:, ::-1]])
        out = spec.func(stack, **kwargs)
        assert isinstance(out, np.ndarray), (dtype, type(out))
        assert out.ndim == 3 and out.shape[0] == 2, (dtype, out.shape)
        assert out.dtype.kind in "biuf", (dtype, out.dtype)
        if spec.name not in NAN_WHERE_UNDEFINED:
            assert np.isfinite(out.astype(np.float64)).all(), dtype
        # each plane is processed on its own: the second result is the first one's function of
        # its own input, not of the whole stack
        single = spec.func(stack[1:], **kwargs)
        np.testing.assert_allclose(out[1:].astype(float), single.astype(float), rtol=1e-5)


def test_rank_filters_refuse_float_input_with_a_clear_error():
    spec = get_function("skimage.filters.rank.mean")
    assert spec.input_dtypes == ("uint8", "uint16")
    with pytest.raises(ValueError, match=r"needs uint8 or uint16 pixels, got float32"):
        spec.func(_plane("float32")[None], footprint=2)


def test_gaussian_matches_scikit_image_and_kwargs_are_typed():
    from skimage import filters

    spec = get_function("skimage.filters.gaussian")
    assert spec.source == "skimage.filters.gaussian"
    assert "channel_axis" not in spec.parameters and "out" not in spec.parameters
    assert "sigma" in spec.param_docs
    plane = _plane("float32")
    out = spec.func(plane[None], sigma=2.0, mode="nearest")
    np.testing.assert_array_equal(out[0], filters.gaussian(plane, sigma=2.0, mode="nearest"))


@pytest.mark.parametrize(
    ("name", "kwargs", "fragments"),
    [
        ("skimage.filters.gaussian", {"sigmaa": 2}, ["sigmaa: unknown kwarg", "'sigma'"]),
        ("skimage.filters.gaussian", {"mode": "reflekt"}, ["mode: expected one of", "'reflect'"]),
        ("skimage.filters.gaussian", {"sigma": "two"}, ["sigma: expected"]),
        ("skimage.filters.gaussian", {"preserve_range": 3}, ["preserve_range: expected bool"]),
        ("skimage.filters.gaussian", {"channel_axis": 0}, ["channel_axis: unknown kwarg"]),
        ("skimage.transform.rescale", {}, ["scale: required kwarg is missing"]),
        ("skimage.transform.resize", {"output_shape": 5}, ["output_shape: expected"]),
        ("skimage.restoration.denoise_nl_means", {"patch_size": 2.5}, ["patch_size: expected"]),
        ("skimage.morphology.white_tophat", {"footprint": "disk"}, ["footprint: expected"]),
    ],
)
def test_bad_kwargs_are_rejected_at_compile_time(name, kwargs, fragments):
    with pytest.raises(InvalidKwargsError) as info:
        validate_kwargs(name, kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_unknown_short_name_suggests_the_registered_one():
    with pytest.raises(UnknownFunctionError) as info:
        get_function("gausian")
    assert "'skimage.filters.gaussian'" in str(info.value)
    assert "prefect-hcs functions list" in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwarg", "good", "bad"),
    [
        # "shift_x, shift_y : int" documents two names in one entry
        ("skimage.filters.rank.mean", "shift_x", 1, 1.5),
        # documented under scikit-image's "Other parameters" heading
        ("skimage.transform.resize", "order", 1, "linear"),
        ("skimage.transform.resize", "mode", "edge", "edgy"),
        # "int or ndarray": a YAML list stands for the array
        ("skimage.segmentation.watershed", "connectivity", [[0, 1, 0]], "full"),
        # undocumented: typed from its default (alpha=0.5)
        ("skimage.filters.hessian", "alpha", 0.3, "half"),
        # "float or Callable[...]": a pipeline file can only give the float
        ("skimage.filters.threshold_li", "initial_guess", 0.4, "otsu"),
    ],
)
def test_kwargs_read_from_every_numpydoc_form_are_checked(name, kwarg, good, bad):
    extra = {"footprint": 2} if ".rank." in name else {}
    extra |= {"output_shape": [8, 8]} if name.endswith("resize") else {}
    validate_kwargs(name, {**extra, kwarg: good})
    with pytest.raises(InvalidKwargsError, match=f"{kwarg}: expected"):
        validate_kwargs(name, {**extra, kwarg: bad})


def test_exclusions_follow_the_documented_rules():
    excluded = skimage_functions.EXCLUDED
    assert excluded["skimage.restoration.calibrate_denoiser"].startswith(
        "required parameter 'denoise_function'"
    )
    assert excluded["skimage.segmentation.random_walker"].startswith("required parameter 'labels'")
    assert "not reproducible" in excluded["skimage.segmentation.morphological_chan_vese"]
    assert excluded["skimage.feature.peak_local_max"] == "returns coordinates"
    assert excluded["skimage.morphology.disk"].startswith("the first parameter 'radius'")
    assert not set(excluded) & {s.name for s in SKIMAGE}


def test_thresholds_become_masks():
    from skimage import filters

    plane = _plane("uint16")
    out = get_function("skimage.filters.threshold_otsu").func(plane[None])
    np.testing.assert_array_equal(out[0], plane > filters.threshold_otsu(plane))
    classes = get_function("skimage.filters.threshold_multiotsu").func(plane[None], classes=3)
    assert set(np.unique(classes)) == {0, 1, 2}
