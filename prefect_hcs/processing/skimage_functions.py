"""Register scikit-image's image→image and image→labels functions, with typed kwargs.

Every public function of the modules in `MODULES` is inspected once, at import: its signature gives
the parameter names and defaults, its numpydoc docstring the parameter types (`doctypes`). A
function is registered as ``skimage.<module>.<name>`` when it can work on one 2-D plane with
kwargs a YAML file can hold; the rules (each exclusion keeps its reason, see `EXCLUDED`):

1. The first parameter is the image (documented as an array).
2. It is not deprecated, and every parameter is passable by keyword.
3. Every *required* parameter besides the image has a YAML-expressible type (number, string,
   bool, sequence). A required second array or a callable (``psf``, ``markers`` of
   ``random_walker``, ``template``, ``inverse_map``) excludes the function — except
   ``footprint``, which a pipeline gives as an int (the radius of a disk) or a nested list, and
   the small kernels ``psf``, ``kernel`` and ``template``, given as nested lists of numbers.
4. It returns one array of the plane's dimensionality: functions returning coordinates, tuples,
   lists, generators, feature vectors or 3-D/RGB results are excluded. ``threshold_*`` functions
   that return a threshold are registered as image→mask (``image > threshold``), and
   ``threshold_multiotsu`` as image→class labels (``np.digitize``).
5. Optional array and callable parameters, ``channel_axis`` (planes are grayscale), ``out`` and
   ``return_*`` flags are hidden: they keep scikit-image's default.

The wrapper applies the function to every 2-D plane of the stack (each leading axis keeps its
length) and checks that each plane's result is one 2-D array of the same shape for all planes.

The rules' data (modules, denied functions, hand-typed parameters, input dtypes) is
`skimage_rules`; ``MODULES`` is re-exported here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from docstring_parser import DocstringParam, DocstringStyle, parse

from . import skimage_rules as rules
from .doctypes import ARRAY, CALLABLE, annotation_from_doc, doc_kinds
from .registry import RegistryError, register
from .skimage_rules import MODULES

__all__ = ["EXCLUDED", "MODULES", "REGISTERED", "WrappedFunction", "discover", "param_docs_of"]


@dataclass(frozen=True)
class WrappedFunction:
    """A registered scikit-image function: its registry name and where it comes from."""

    name: str
    source: str
    input_dtypes: tuple[str, ...]


#: Registered functions by name, and excluded ones with the reason (filled by `discover`).
REGISTERED: dict[str, WrappedFunction] = {}
EXCLUDED: dict[str, str] = {}


def _is_deprecated(func: Callable[..., Any], doc: str) -> bool:
    head = doc[:600].lower()
    return ".. deprecated" in head or "is deprecated" in head or hasattr(func, "__deprecated__")


def _is_array_only(type_name: str | None) -> bool:
    kinds = doc_kinds(type_name)
    return kinds is not None and all(k in (ARRAY, CALLABLE) for k in kinds)


def _is_skimage_deprecated_default(value: Any) -> bool:
    return type(value).__name__ in ("DEPRECATED", "_DeprecatedValue") or repr(value) == "DEPRECATED"


#: scikit-image writes "Other parameters"; numpydoc (and docstring-parser) expect a capital P.
_OTHER_HEADING = re.compile(r"^Other parameters\n(-+)$", re.MULTILINE)


def param_docs_of(doc: str) -> dict[str, DocstringParam]:
    """Every documented parameter of a numpydoc docstring, by name.

    Two scikit-image habits would otherwise leave parameters untyped (and so unchecked at compile
    time): ``shift_x, shift_y : int`` documents several names in one entry, and the transforms
    document ``order``/``mode``/``cval`` under an "Other parameters" heading.
    """
    parsed = parse(_OTHER_HEADING.sub(r"Other Parameters\n\1", doc), DocstringStyle.NUMPYDOC)
    out: dict[str, DocstringParam] = {}
    for meta in parsed.meta:
        if isinstance(meta, DocstringParam):
            for name in meta.arg_name.split(","):
                out.setdefault(name.strip(), meta)
    return out


def _check_image_param(first: inspect.Parameter, docs: Mapping[str, Any]) -> str | None:
    if first.kind is inspect.Parameter.VAR_POSITIONAL:
        return "takes no image"
    if first.name not in rules.IMAGE_NAMES:
        return f"the first parameter {first.name!r} is not an image"
    doc = docs.get(first.name)
    if not doc or not rules.IMAGE_TYPE.search((doc.type_name or "").lower()):
        return f"the first parameter {first.name!r} is not an image"
    return None


def _user_parameters(
    sig: inspect.Signature, docs: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[list[inspect.Parameter], dict[str, str]] | str:
    """The exposed keyword parameters (annotated) and their docs, or why the function is out."""
    params: list[inspect.Parameter] = []
    param_docs: dict[str, str] = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            return f"parameter {p.name!r} is positional-only"
        doc = docs.get(p.name)
        type_name = doc.type_name if doc else None
        required = p.default is inspect.Parameter.empty
        if _is_skimage_deprecated_default(p.default):
            continue
        if p.name in overrides:
            ann: Any = overrides[p.name]
        elif p.name == "footprint":
            ann = int | list | None if not required else int | list
        elif p.name in rules.KERNELS:
            ann = list if required else list | None
        elif p.name in rules.HIDDEN or p.name.startswith("return_") or p.name == "visualize":
            if required:
                return f"required parameter {p.name!r} cannot come from a pipeline file"
            continue
        elif _is_array_only(type_name) or (not required and callable(p.default)):
            if required:
                return f"required parameter {p.name!r} is an array or callable"
            continue
        else:
            ann = annotation_from_doc(type_name, p.default, not required)
            if required and ann is Any:
                return f"required parameter {p.name!r} has no readable type in the docstring"
        params.append(
            inspect.Parameter(
                p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default, annotation=ann
            )
        )
        if doc and doc.description:
            param_docs[p.name] = " ".join(doc.description.split())
    return params, param_docs


def _convert_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """YAML values to what scikit-image expects: footprint radius → disk, lists → tuples."""
    from skimage.morphology import disk

    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "footprint" and isinstance(value, (int, np.integer)):
            value = disk(int(value))
        elif key == "footprint" and isinstance(value, (list, tuple)):
            value = np.asarray(value, dtype=bool)
        elif key in rules.KERNELS and isinstance(value, (list, tuple)):
            value = np.asarray(value, dtype=np.float64)
        elif isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def _as_plane_result(name: str, result: Any, plane: np.ndarray, mode: str) -> np.ndarray:
    if mode == "threshold":
        return np.asarray(plane > result)
    if mode == "classes":
        return np.digitize(plane, np.asarray(result)).astype(np.uint8)
    if not isinstance(result, np.ndarray) or result.ndim != 2:
        what = getattr(result, "shape", type(result).__name__)
        raise ValueError(f"{name} returned {what} for a 2-D plane; expected one 2-D image")
    return result


@dataclass(frozen=True)
class _Call:
    """How one scikit-image function is called on a plane."""

    name: str
    func: Callable[..., Any]
    mode: str  # "image", "threshold" or "classes"
    input_dtypes: tuple[str, ...]
    fixed: Mapping[str, Any]  # hidden kwargs always passed (channel_axis=None)


def _make_wrapper(call: _Call) -> Callable[..., np.ndarray]:
    def wrapper(stack: np.ndarray, **kwargs: Any) -> np.ndarray:
        stack = np.asarray(stack)
        if call.input_dtypes and stack.dtype.name not in call.input_dtypes:
            raise ValueError(
                f"{call.name} needs {' or '.join(call.input_dtypes)} pixels, got "
                f"{stack.dtype.name}; convert first (e.g. skimage.util.img_as_uint, or a "
                "threshold for a mask)"
            )
        planes = stack.reshape(-1, *stack.shape[-2:])
        kw = {**call.fixed, **_convert_kwargs(kwargs)}
        outs = [_as_plane_result(call.name, call.func(p, **kw), p, call.mode) for p in planes]
        if len({o.shape for o in outs}) != 1:
            raise ValueError(f"{call.name} returned planes of different shapes")
        return np.stack(outs).reshape(stack.shape[:-2] + outs[0].shape)

    return wrapper


def _register_one(module: str, fname: str, func: Callable[..., Any]) -> str | None:
    """Register one scikit-image function; return why it was excluded, or None."""
    key = f"{module}.{fname}"
    if key in rules.DENY:
        return rules.DENY[key]
    if module in rules.ONLY and fname not in rules.ONLY[module]:
        return (
            f"only {', '.join(sorted(rules.ONLY[module]))} of skimage.{module} map an image to an "
            "image; object measurements are the measure_objects function"
        )
    doc = inspect.getdoc(func) or ""
    if _is_deprecated(func, doc):
        return "deprecated"
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return "no inspectable signature"
    docs = param_docs_of(doc)
    first = next(iter(sig.parameters.values()), None)
    if first is None:
        return "takes no image"
    if why := _check_image_param(first, docs):
        return why
    exposed = _user_parameters(sig, docs, rules.TYPE_OVERRIDES.get(key, {}))
    if isinstance(exposed, str):
        return exposed
    params, param_docs = exposed
    mode = "threshold" if rules.THRESHOLD.match(key) else "image"
    mode = "classes" if key == "filters.threshold_multiotsu" else mode
    dtypes = rules.input_dtypes(module, key, docs[first.name].type_name or "")
    defaults = rules.DEFAULTS.get(key, {})
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in params]
    fixed = {"channel_axis": None} if "channel_axis" in sig.parameters else {}
    name = f"skimage.{key}"
    call = _Call(name, func, mode, dtypes, {**fixed, **defaults})
    wrapper = _make_wrapper(call)
    stack = inspect.Parameter("stack", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    wrapper.__signature__ = inspect.Signature([stack, *params])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    wrapper.__doc__ = _summary(doc, mode)
    wrapper.__name__ = fname
    wrapper.__qualname__ = name
    register(
        name,
        variable_components=("site",),
        source=f"skimage.{key}",
        param_docs=param_docs,
        input_dtypes=dtypes,
        version=_skimage_version(),  # the wrapper's source is shared; scikit-image's is not
    )(wrapper)
    REGISTERED[name] = WrappedFunction(name, f"skimage.{key}", dtypes)
    return None


def _skimage_version() -> str:
    from importlib.metadata import version

    return f"skimage-{version('scikit-image')}"


def _summary(doc: str, mode: str) -> str:
    first = doc.strip().splitlines()[0].strip() if doc.strip() else ""
    if mode == "threshold":
        return f"Mask of pixels above the threshold: {first[0].lower() + first[1:]}"
    if mode == "classes":
        return f"Class labels 0..n from {first[0].lower() + first[1:]}"
    return first


def discover() -> None:
    """Inspect `MODULES` and register every function that fits (idempotent).

    Called by the registry the first time a name is not among the hand-written functions (it
    imports most of scikit-image: about a second).
    """
    if REGISTERED or EXCLUDED:
        return
    for module in MODULES:
        mod = importlib.import_module(f"skimage.{module}")
        for fname in getattr(mod, "__all__", []):
            func = getattr(mod, fname, None)
            if not inspect.isfunction(func) and not inspect.isbuiltin(func):
                continue
            try:
                why = _register_one(module, fname, func)
            except RegistryError as exc:  # e.g. a parameter named like a metadata input
                why = str(exc)
            if why:
                EXCLUDED[f"skimage.{module}.{fname}"] = why
