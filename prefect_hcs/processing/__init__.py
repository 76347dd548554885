"""Image processing functions: pure numpy/scipy/scikit-image, arrays in, arrays (+ tables) out.

Importing this package registers every built-in function by name (see `registry`), so pipelines
written as YAML/JSON can refer to them, e.g. ``func: tophat_background``.

The calling contract: ``fn(stack, **kwargs)`` where ``stack`` has one leading axis per variable
component of the step (in the step's order) followed by (Y, X). A function returns an array with
the same number of dims (each leading axis keeps its length or collapses to 1; Y, X may change),
optionally with a dict of "special outputs": named tables as lists of row dicts.
"""

from __future__ import annotations

from . import (
    background,
    composite,
    illumination,
    measure,
    normalize,
    projection,
    segmentation,
    skimage_functions,
    stitching,
)
from .registry import (
    COMPONENTS,
    METADATA_INPUTS,
    FunctionRegistry,
    FunctionSpec,
    InvalidKwargsError,
    RegistryError,
    UnknownFunctionError,
    add_provider,
    all_specs,
    get_function,
    list_functions,
    register,
    validate_kwargs,
)

add_provider(skimage_functions.discover)

__all__ = [
    "COMPONENTS",
    "METADATA_INPUTS",
    "FunctionRegistry",
    "FunctionSpec",
    "InvalidKwargsError",
    "RegistryError",
    "UnknownFunctionError",
    "add_provider",
    "all_specs",
    "background",
    "composite",
    "illumination",
    "measure",
    "get_function",
    "list_functions",
    "normalize",
    "projection",
    "register",
    "segmentation",
    "skimage_functions",
    "stitching",
    "validate_kwargs",
]
