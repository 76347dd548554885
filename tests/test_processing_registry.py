"""The function registry: names, specs, and compile-time kwarg validation."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pytest

import prefect_hcs.processing as processing
from prefect_hcs.processing import (
    FunctionRegistry,
    InvalidKwargsError,
    RegistryError,
    UnknownFunctionError,
    get_function,
    list_functions,
    validate_kwargs,
)

BUILTINS = {
    "percentile_normalize": ("site",),
    "max_projection": ("z",),
    "mean_projection": ("z",),
    "tophat_background": ("site",),
    "rolling_ball_background": ("site",),
    "channel_composite": ("channel",),
    "stitch_tiles": ("channel", "site"),
    "count_nuclei": ("site",),
    "segment_nuclei_labels": ("site",),
}


@pytest.mark.parametrize(("name", "components"), sorted(BUILTINS.items()))
def test_builtins_registered_with_default_components(name: str, components: tuple[str, ...]):
    spec = get_function(name)
    assert spec.name == name
    assert spec.variable_components == components
    assert "stack" not in spec.parameters
    assert spec.description and "\n" not in spec.description
    assert callable(spec.func)


def test_list_functions_is_sorted_and_complete():
    names = list_functions()
    assert names == sorted(names)
    assert set(BUILTINS) <= set(names)


def test_stitch_spec_declares_metadata_and_outputs():
    spec = get_function("stitch_tiles")
    assert spec.metadata_inputs == ("grid", "overlap", "site_positions_px")
    assert spec.special_outputs == ("tile_positions",)
    assert "grid" not in spec.parameters and "overlap" not in spec.parameters
    assert spec.parameters["max_shift"].default == 20
    assert spec.parameters["max_shift"].annotation is int
    assert get_function("count_nuclei").special_outputs == ("measurements",)


def test_spec_is_frozen():
    spec = get_function("max_projection")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_unknown_name_suggests_close_matches_and_lists_all():
    with pytest.raises(UnknownFunctionError) as info:
        get_function("max_projectoin")
    msg = str(info.value)
    assert "Did you mean 'max_projection'" in msg
    assert "Available:" in msg and "tophat_background" in msg
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(
    ("name", "kwargs", "fragments"),
    [
        ("percentile_normalize", {"lo": 1}, ["'percentile_normalize'", "lo: unknown", "'low'"]),
        ("percentile_normalize", {"low": "1"}, ["low: expected float", "str '1'"]),
        ("percentile_normalize", {"low": True}, ["low: expected float"]),
        ("percentile_normalize", {"low": 60, "high": 40}, ["low < high"]),
        ("tophat_background", {"radius": 2.5}, ["radius: expected int"]),
        ("tophat_background", {"radius": 0}, ["radius: must be > 0"]),
        ("count_nuclei", {"threshold": "otsuu"}, ["threshold: expected 'otsu' | 'li' | float"]),
        ("count_nuclei", {"split_touching": 1}, ["split_touching: expected bool"]),
        ("count_nuclei", {"max_area": "big"}, ["max_area: expected int | None"]),
        ("channel_composite", {"weights": 2.0}, ["weights: expected"]),
        ("channel_composite", {"weights": [1.0, "a"]}, ["weights: expected"]),
        ("channel_composite", {"weights": [0, 0]}, ["positive sum"]),
        ("stitch_tiles", {"blend": "cubic"}, ["blend: expected one of ['linear', 'none']"]),
        ("stitch_tiles", {"grid": [2, 2]}, ["grid: metadata input", "plate layout"]),
        ("stitch_tiles", {"overlap": 0.1, "foo": 1}, ["overlap: metadata", "foo: unknown"]),
        ("percentile_normalize", {"pixel_size_um": 0.5}, ["pixel_size_um: metadata"]),
    ],
)
def test_bad_kwargs_are_named(name: str, kwargs: dict, fragments: list[str]):
    with pytest.raises(InvalidKwargsError) as info:
        validate_kwargs(name, kwargs)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert "Accepted kwargs:" in msg
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("percentile_normalize", {}),
        ("percentile_normalize", {"low": 2, "high": 98.5, "target_max": 1000}),  # int for float
        ("percentile_normalize", {"target_max": None}),
        ("count_nuclei", {"threshold": "li", "max_area": 400, "sigma": 2}),
        ("count_nuclei", {"threshold": 120.0}),
        ("channel_composite", {"weights": [1, 2.5]}),
        ("channel_composite", {"weights": (1.0, 1.0)}),
        ("stitch_tiles", {"blend": "none", "max_shift": 10, "reference_channel": 1}),
        ("tophat_background", {"radius": np.int64(10)}),
    ],
)
def test_good_kwargs_pass_through_unchanged(name: str, kwargs: dict):
    out = validate_kwargs(name, kwargs)
    assert out == kwargs
    assert out is not kwargs


def test_validate_unknown_function_raises_unknown():
    with pytest.raises(UnknownFunctionError):
        validate_kwargs("no_such_function", {})


def test_custom_registry_register_and_required_kwargs():
    reg = FunctionRegistry()

    @reg.register(variable_components=("channel", "z"), metadata_inputs=("pixel_size_um",))
    def scale_bar(
        stack: np.ndarray,
        length_um: float,
        mode: Literal["a", "b"] = "a",
        sizes: tuple[int, int] = (1, 2),
        pixel_size_um: float | None = None,
    ) -> np.ndarray:
        """Draw a scale bar.

        More text.
        """
        return stack

    spec = reg.get("scale_bar")
    assert spec.description == "Draw a scale bar."
    assert list(spec.parameters) == ["length_um", "mode", "sizes"]
    assert isinstance(spec.parameters["length_um"], inspect.Parameter)
    assert scale_bar.__hcs_spec__ is spec  # type: ignore[attr-defined]
    with pytest.raises(InvalidKwargsError, match="length_um: required kwarg is missing"):
        reg.validate("scale_bar", {})
    assert reg.validate("scale_bar", {"length_um": 10, "sizes": [3, 4]}) == {
        "length_um": 10,
        "sizes": [3, 4],
    }
    with pytest.raises(InvalidKwargsError, match="sizes: expected 2 items"):
        reg.validate("scale_bar", {"length_um": 1, "sizes": [1, 2, 3]})
    with pytest.raises(InvalidKwargsError, match="mode: expected one of"):
        reg.validate("scale_bar", {"length_um": 1, "mode": "c"})
    assert reg.names() == ["scale_bar"]
    assert "scale_bar" not in list_functions()  # separate from the default registry


@pytest.mark.parametrize(
    ("decorator_kwargs", "signature_src", "fragment"),
    [
        ({"variable_components": ("well",)}, "def f(stack): pass", "unknown variable components"),
        ({"variable_components": ()}, "def f(stack): pass", "must not be empty"),
        ({"metadata_inputs": ("plate",)}, "def f(stack, plate=1): pass", "unknown metadata"),
        ({"metadata_inputs": ("grid",)}, "def f(stack): pass", "not parameters"),
        ({}, "def f(image): pass", "first parameter must be `stack`"),
        ({}, "def f(stack, *args): pass", "not allowed"),
        ({}, "def f(stack, grid=None): pass", "metadata input name"),
    ],
)
def test_bad_registrations_rejected(decorator_kwargs: dict, signature_src: str, fragment: str):
    namespace: dict = {}
    exec(signature_src, namespace)
    with pytest.raises(RegistryError, match=fragment):
        FunctionRegistry().register(**decorator_kwargs)(namespace["f"])


def test_duplicate_name_from_other_function_rejected():
    reg = FunctionRegistry()

    def a(stack):
        return stack

    def b(stack):
        return stack

    reg.register("same")(a)
    reg.register("same")(a)  # re-registering the same function (module reload) is fine
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("same")(b)


def test_sequence_annotation_checked():
    reg = FunctionRegistry()

    @reg.register()
    def g(stack, values: Sequence[float] = (1.0,), flag: bool = False):
        """G."""
        return stack

    assert reg.validate("g", {"values": [1, 2.5], "flag": np.bool_(True)})
    with pytest.raises(InvalidKwargsError, match="values"):
        reg.validate("g", {"values": "abc"})


def test_package_exports_contract():
    for attr in ("register", "get_function", "list_functions", "validate_kwargs", "FunctionSpec"):
        assert hasattr(processing, attr)
    assert set(processing.METADATA_INPUTS) == {
        "grid",
        "overlap",
        "pixel_size_um",
        "channel_names",
        "site_positions_px",
    }
