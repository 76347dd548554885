"""Which scikit-image functions `skimage_functions` registers, and how: the rules as data.

The modules inspected, the functions denied with the reason, the parameters typed or defaulted
by hand where scikit-image's docstrings cannot be read, and the input dtypes each kind of
function accepts (`input_dtypes`). `skimage_functions` applies them; changing a rule here changes
what is registered, and docs/functions.md (a test checks it is regenerated).
"""

from __future__ import annotations

import re
from typing import Any, Literal

__all__ = [
    "DEFAULTS",
    "DENY",
    "DTYPE_OVERRIDES",
    "HIDDEN",
    "IMAGE_NAMES",
    "IMAGE_TYPE",
    "INT_DTYPES",
    "KERNELS",
    "LABEL_INPUT",
    "MASK_INPUT",
    "MASK_OR_LABEL_DOC",
    "MASK_OR_LABEL_DTYPES",
    "MODULES",
    "ONLY",
    "THRESHOLD",
    "TYPE_OVERRIDES",
    "input_dtypes",
]

#: The scikit-image modules whose functions are registered.
MODULES: tuple[str, ...] = (
    "filters",
    "filters.rank",
    "morphology",
    "util",
    "measure",
    "exposure",
    "restoration",
    "segmentation",
    "feature",
    "transform",
)

#: Functions that pass the static rules but are not image→image per plane, with the reason.
DENY: dict[str, str] = {
    "filters.filter_forward": "a frequency-domain filter helper taking impulse-response callables",
    "filters.filter_inverse": "a frequency-domain filter helper taking impulse-response callables",
    "filters.wiener": "needs an impulse-response callable",
    "filters.rank_order": "returns a tuple (ranks, original values)",
    "filters.try_all_threshold": "draws a matplotlib figure",
    "filters.rank.windowed_histogram": "returns a 3-D histogram per pixel",
    "morphology.max_tree": "returns a tuple (parent, traverser)",
    "feature.graycomatrix": "returns a 4-D co-occurrence matrix",
    "feature.corner_foerstner": "returns a tuple (error ellipse sizes, roundness)",
    "filters.gabor": "returns a tuple (real, imaginary)",
    "feature.draw_multiblock_lbp": "returns an RGB image",
    "restoration.denoise_wavelet": "needs PyWavelets, which is not a dependency",
    "util.apply_parallel": "takes a function",
    "segmentation.morphological_chan_vese": (
        "not reproducible: the result depends on earlier calls (module-level state in "
        "scikit-image's morphsnakes curvature operator), so a retried well would differ"
    ),
    "segmentation.morphological_geodesic_active_contour": (
        "not reproducible: the result depends on earlier calls (module-level state in "
        "scikit-image's morphsnakes curvature operator), so a retried well would differ"
    ),
    "util.dtype_limits": "returns a tuple (min, max)",
    "util.slice_along_axes": "slices an n-D array; use crop for planes",
    "util.montage": "takes a stack of images",
    "util.view_as_blocks": "returns a view of blocks (4-D)",
    "util.view_as_windows": "returns a view of windows (4-D)",
    "util.regular_grid": "returns slices",
    "util.regular_seeds": "takes a shape",
    "util.unique_rows": "for 2-D tables of rows, not images",
    "util.label_points": "takes coordinates",
    "util.lookfor": "searches documentation",
    "segmentation.quickshift": "needs a multichannel (RGB) image",
    "feature.hog": "returns a feature vector, not an image",
    "feature.daisy": "returns a descriptor array, not an image",
    "feature.multiscale_basic_features": "returns a (Y, X, features) array",
    "feature.hessian_matrix": "returns a list of arrays",
    "feature.structure_tensor": "returns a list of arrays",
    "feature.corner_peaks": "returns coordinates",
    "feature.peak_local_max": "returns coordinates",
    "feature.blob_dog": "returns coordinates",
    "feature.blob_doh": "returns coordinates",
    "feature.blob_log": "returns coordinates",
    "transform.hough_circle": "returns a 3-D accumulator",
    "transform.hough_ellipse": "returns a record array of ellipses",
    "transform.hough_line": "returns a tuple (accumulator, angles, distances)",
    "transform.probabilistic_hough_line": "returns a list of line segments",
    "transform.pyramid_gaussian": "returns a generator",
    "transform.pyramid_laplacian": "returns a generator",
    "transform.radon": "returns a sinogram (angles × positions), not an image of the plane",
    "transform.iradon": "expects a sinogram",
    "transform.iradon_sart": "expects a sinogram",
    "transform.frt2": "needs a square prime-sized image",
    "transform.ifrt2": "expects a finite Radon transform",
    "segmentation.mark_boundaries": "returns an RGB image",
    "segmentation.relabel_sequential": "returns a tuple (labels, forward map, inverse map)",
    "segmentation.active_contour": "returns snake coordinates",
    "exposure.histogram": "returns a tuple (counts, bins)",
    "exposure.cumulative_distribution": "returns a tuple (cdf, bins)",
    "exposure.is_low_contrast": "returns a bool",
    "restoration.estimate_sigma": "returns a number",
    "restoration.unsupervised_wiener": "needs a point-spread function array",
}

#: Threshold functions returning a number (or a per-pixel threshold): registered as masks.
THRESHOLD = re.compile(r"^filters\.threshold_(?!multiotsu)")
IMAGE_TYPE = re.compile(r"\b(nd)?array|\bimage\b")
IMAGE_NAMES = {"image", "img", "ar", "data", "gimage", "labels", "label_image", "label_img"}
HIDDEN = {"channel_axis", "multichannel", "out", "output", "mask", "spacing"}
INT_DTYPES = ("uint8", "uint16")
#: Input dtypes of functions documented to take a binary mask or a label image.
MASK_OR_LABEL_DTYPES = ("bool", "uint8", "uint16", "int32", "uint32")
MASK_OR_LABEL_DOC = re.compile(r"\bbool|\blabel|\bbinary|\bof (dtype )?int|\bint(eger)? or bool")
#: Small-kernel parameters a pipeline file gives as nested lists of numbers.
KERNELS = {"psf", "kernel", "template"}
#: Parameters whose docstring type cannot be read ("`image` type"), typed here.
TYPE_OVERRIDES: dict[str, dict[str, Any]] = {
    "morphology.flood_fill": {"new_value": float},
    "segmentation.flood_fill": {"new_value": float},
    # documented as "see `numpy.pad`": the image is padded with numpy.pad before matching
    "feature.match_template": {
        "mode": Literal[
            "constant",
            "edge",
            "linear_ramp",
            "maximum",
            "mean",
            "median",
            "minimum",
            "reflect",
            "symmetric",
            "wrap",
            "empty",
        ],
        "constant_values": float,
    },
}
#: Modules of which only some functions are image→image (the rest return numbers or tables).
ONLY: dict[str, set[str]] = {"measure": {"label", "block_reduce"}}
#: Functions that need integer labels (not a bool mask).
LABEL_INPUT = {"morphology.remove_objects_by_distance"}
#: Functions taking a mask whose docstring types the image only as "array".
MASK_INPUT = {"morphology.convex_hull_image", "morphology.convex_hull_object", "morphology.thin"}
#: Input dtypes narrowed by what scikit-image does with them: threshold_minimum histograms an
#: integer image per integer value, which on 16-bit data never has two smoothed maxima.
DTYPE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "filters.threshold_minimum": ("uint8", "float32", "float64"),
}
#: Defaults that differ from scikit-image's because planes are grayscale.
DEFAULTS: dict[str, dict[str, Any]] = {"segmentation.quickshift": {"convert2lab": False}}


def input_dtypes(module: str, key: str, image_doc: str) -> tuple[str, ...]:
    """Rank filters take 8/16-bit integers; functions documented to take a mask or labels take
    bool or integers; everything else any numeric dtype (empty tuple)."""
    if key in DTYPE_OVERRIDES:
        return DTYPE_OVERRIDES[key]
    if module == "filters.rank":
        return INT_DTYPES
    if key in LABEL_INPUT:
        return MASK_OR_LABEL_DTYPES[1:]
    if MASK_OR_LABEL_DOC.search(image_doc.lower()) or key in MASK_INPUT:
        return MASK_OR_LABEL_DTYPES
    return ()
