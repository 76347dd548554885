"""Normalization, projections, composites, background subtraction and the dtype rule."""

from __future__ import annotations

import time

import numpy as np
import pytest

from prefect_hcs.processing import get_function
from prefect_hcs.processing.background import rolling_ball_background, tophat_background
from prefect_hcs.processing.composite import channel_composite
from prefect_hcs.processing.normalize import cast_like, percentile_normalize
from prefect_hcs.processing.projection import max_projection, mean_projection

RNG = np.random.default_rng(1234)

# --- percentile_normalize --------------------------------------------------------------------


def test_normalize_known_ramp_uint16():
    # 0..10000 in 2 planes: percentiles over the whole stack are 100 (1%) and 9900 (99%).
    ramp = np.arange(10000).reshape(2, 50, 100).astype(np.uint16)
    lo, hi = np.percentile(ramp, [1, 99])
    out = percentile_normalize(ramp, low=1, high=99)
    assert out.dtype == np.uint16 and out.shape == ramp.shape
    expected = np.clip((ramp.astype(float) - lo) / (hi - lo) * 65535, 0, 65535)
    assert np.abs(out.astype(float) - expected).max() <= 1.0
    assert out.flat[0] == 0 and out.flat[-1] == 65535
    # planes are not rescaled on their own: stack-wide percentiles keep tiles comparable
    assert out[0].max() < 33000 and out[1].min() > 32000


@pytest.mark.parametrize(
    ("dtype", "target_max", "top"),
    [
        (np.uint8, None, 255),
        (np.uint16, 4095, 4095),
        (np.int16, None, 32767),
        (np.float32, None, 1.0),
        (np.float64, 10.0, 10.0),
    ],
)
def test_normalize_target_range_and_dtype(dtype, target_max, top):
    ramp = np.linspace(0, 100, 4 * 32 * 32).reshape(4, 32, 32).astype(dtype)
    out = percentile_normalize(ramp, low=5, high=95, target_max=target_max)
    expected_dtype = np.float32 if np.dtype(dtype).kind == "f" else dtype
    assert out.dtype == expected_dtype
    assert float(out.min()) == 0 and float(out.max()) == pytest.approx(top)
    # 50th percentile maps to the middle of the target range
    mid = float(np.median(out.astype(np.float64)))
    assert mid == pytest.approx(top / 2, rel=0.02, abs=1)


def test_normalize_constant_stack_is_zero_and_bad_range_rejected():
    assert not percentile_normalize(np.full((2, 8, 8), 7, np.uint16)).any()
    with pytest.raises(ValueError):
        percentile_normalize(np.zeros((1, 4, 4), np.uint8), target_max=1000)
    with pytest.raises(ValueError):
        percentile_normalize(np.zeros((1, 4, 4), np.uint8), low=50, high=50)


# --- projections -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 16, 12), (3, 2, 16, 12)])
def test_projections_match_numpy(dtype, shape):
    stack = (RNG.random(shape) * 200).astype(dtype)
    mx = max_projection(stack)
    mn = mean_projection(stack)
    assert mx.shape == mn.shape == (1, *shape[1:])
    out_dtype = np.float32 if np.dtype(dtype).kind == "f" else dtype
    assert mx.dtype == mn.dtype == out_dtype
    np.testing.assert_array_equal(mx, stack.max(axis=0, keepdims=True).astype(out_dtype))
    expected_mean = stack.astype(np.float64).mean(axis=0, keepdims=True)
    if np.dtype(dtype).kind in "iu":
        np.testing.assert_array_equal(mn, np.rint(expected_mean).astype(dtype))
    else:
        np.testing.assert_allclose(mn, expected_mean, rtol=1e-6)


def test_projection_needs_a_leading_axis():
    with pytest.raises(ValueError):
        max_projection(np.zeros((4, 4)))


# --- composite -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (None, 20.0),  # (10 + 20 + 30) / 3
        ([1, 0, 0], 10.0),
        ([0, 0, 2], 30.0),
        ([1, 1, 2], 22.5),  # (10 + 20 + 60) / 4
        ((3.0, 1.0, 0.0), 12.5),
    ],
)
def test_composite_weights(weights, expected):
    stack = np.stack([np.full((6, 7), v, np.uint16) for v in (10, 20, 30)])
    out = channel_composite(stack, weights=weights)
    assert out.shape == (1, 6, 7) and out.dtype == np.uint16
    assert np.all(out == np.uint16(np.rint(expected)))
    out_f = channel_composite(stack.astype(np.float32), weights=weights)
    assert out_f.dtype == np.float32
    np.testing.assert_allclose(out_f, expected, rtol=1e-6)


def test_composite_weight_count_must_match():
    with pytest.raises(ValueError, match="2 weights for 3 channels"):
        channel_composite(np.zeros((3, 4, 4)), weights=[1, 1])


# --- background ------------------------------------------------------------------------------


def _gradient_with_spot(shape=(256, 256), noise=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    background = 1000 + 3.0 * xx + 1.5 * yy + 200 * np.sin(yy / shape[0] * np.pi)
    spot = 2000 * np.exp(-((yy - 100) ** 2 + (xx - 150) ** 2) / (2 * 2.0**2))
    img = background + spot + (RNG.normal(0, noise, shape) if noise else 0)
    return img, spot


@pytest.mark.parametrize(
    ("func", "kwargs"),
    [
        (tophat_background, {"radius": 15}),
        (tophat_background, {"radius": 15, "downsample": 2}),
        (rolling_ball_background, {"radius": 25}),
        (rolling_ball_background, {"radius": 25, "downsample": 1}),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_background_removes_gradient_keeps_spot(func, kwargs, dtype):
    img, spot = _gradient_with_spot()
    stack = np.stack([img, img[::-1]]).astype(dtype)
    out = func(stack, **kwargs)
    assert out.shape == stack.shape and out.dtype == dtype
    far = spot < 1  # pixels well away from the spot
    for plane, peak, mask in ((out[0], (100, 150), far), (out[1], (155, 150), far[::-1])):
        assert float(np.median(plane[mask])) < 15  # gradient of ~1500 gone
        assert float(plane[peak]) > 0.85 * 2000  # spot kept
    assert float(out.min()) >= 0


def test_tophat_speed_512():
    plane = (RNG.random((1, 512, 512)) * 1000).astype(np.uint16)
    tophat_background(plane)
    start = time.perf_counter()
    tophat_background(plane)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"tophat on 512^2 took {elapsed * 1000:.0f} ms"


# --- dtype rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("percentile_normalize", (2, 32, 32)),
        ("max_projection", (3, 32, 32)),
        ("mean_projection", (3, 32, 32)),
        ("tophat_background", (2, 32, 32)),
        ("rolling_ball_background", (2, 32, 32)),
        ("channel_composite", (2, 32, 32)),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_dtype_and_dims_preserved(name, shape, dtype):
    stack = (RNG.random(shape) * 100).astype(dtype)
    out = get_function(name).func(stack)
    assert out.ndim == stack.ndim
    assert out.shape[-2:] == stack.shape[-2:]
    assert all(o in (1, s) for o, s in zip(out.shape[:-2], stack.shape[:-2], strict=True))
    assert out.dtype == (np.float32 if np.dtype(dtype).kind == "f" else dtype)


def test_cast_like_rounds_and_clips():
    values = np.array([-3.0, 0.4, 0.6, 254.5, 300.0])
    np.testing.assert_array_equal(cast_like(values, np.uint8), [0, 0, 1, 254, 255])
    assert cast_like(values, np.float64).dtype == np.float32
    big = np.array([-1e12, 3e9, 1e12], dtype=np.float32)  # float32 cannot hold int32 max exactly
    out = cast_like(big, np.int32)
    assert out[0] == np.iinfo(np.int32).min and out[2] > 2**31 - 200 and out[1] == out[2]
