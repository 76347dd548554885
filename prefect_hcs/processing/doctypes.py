"""Turn numpydoc parameter types ("scalar or sequence of scalars, optional") into annotations.

scikit-image documents every parameter's type in its numpydoc docstring, but its signatures carry
almost no annotations. The registry checks pipeline kwargs against annotations at compile time, so
the automatically registered functions get annotations read from the docstring here. The mapping
is deliberately lenient: a type phrase we cannot read becomes ``Any`` (accepted, then checked by
scikit-image at run time) rather than a wrong type that would reject a valid pipeline.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["ARRAY", "CALLABLE", "annotation_from_doc", "doc_kinds"]

#: Markers for type phrases a YAML/JSON pipeline cannot (sensibly) express.
ARRAY = "array"
CALLABLE = "callable"

_WORDS: dict[str, Any] = {
    "int": int,
    "integer": int,
    "float": float,
    "scalar": float,
    "number": float,
    "double": float,
    "bool": bool,
    "boolean": bool,
    "str": str,
    "string": str,
    "none": type(None),
    "tuple": Sequence,
    "list": Sequence,
    "sequence": Sequence,
    "iterable": Sequence,
    "dict": dict,
    "ndarray": ARRAY,
    "array": ARRAY,
    "array_like": ARRAY,
    "array-like": ARRAY,
    "arraylike": ARRAY,
    "callable": CALLABLE,
    "function": CALLABLE,
    "data-type": str,  # a numpy dtype, which a pipeline file names ("float32")
}

_QUOTED = re.compile(r"""^(['"])(.*)\1$""")


def _split_top(text: str) -> list[str]:
    """Split on commas and the word 'or' outside braces/brackets/parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out: list[str] = []
    for p in parts:
        out.extend(re.split(r"\s+or\s+", p) if "{" not in p else [p])
    return [p.strip() for p in out if p.strip()]


_ARRAY_WORD = re.compile(r"\b(nd)?array\b(?![_-]like)|\bimage\b")
_ARRAY_LIKE = re.compile(r"\barray[_-]?like\b")
_QUALIFIER = re.compile(
    r"^\d-?d$|^(shape|dtype)\b|^\([\w\s,.\[\]]*\)$"
    r"|^(u?int|float|complex)\d+$"  # "ndarray, int64": the element type of an array
    r"|^(positive|non-negative|nonnegative)$|^\.\.\.$"  # "float, positive"; "{1, 2, ...}"
)
#: Members of an integer set such as ``{1, 2, ..., ar.ndim}`` (connectivity).
_INT_MEMBER = re.compile(r"^-?\d+$|^\w+\.ndim$")


def _token_kind(token: str) -> Any:
    """The annotation for one phrase ('int', "'reflect'", 'tuple of floats'), or None if unknown.

    ``array_like`` is a sequence (a YAML list is array-like); ``ndarray`` / ``(M, N) array`` is an
    array a pipeline file cannot sensibly hold.
    """
    token = token.strip().strip("`").strip()
    if m := _QUOTED.match(token):
        return Literal[m.group(2)]
    if token in ("True", "False"):
        return bool
    if _INT_MEMBER.match(token):
        return int
    low = token.lower()
    if low.startswith("callable"):  # "Callable[[array[float]], float]"
        return CALLABLE
    if re.search(r"\barrays\b", low):  # "2-tuple of arrays"
        return ARRAY
    if re.match(r"^\d-tuple\b", low):  # "2-tuple", "2-tuple of floats"
        return Sequence
    if _ARRAY_LIKE.search(low):
        return Sequence
    if _ARRAY_WORD.search(low):
        return ARRAY
    if low.startswith(("sequence of", "tuple of", "list of", "iterable of", "tuple (")):
        return Sequence
    if "generator" in low or low in ("rng", "random_state", "randomstate"):
        return int  # seeds are ints in a pipeline file
    words = [w.strip(".,()") for w in low.split()]
    words = [w.split(".", 1)[1] if w.startswith(("numpy.", "np.")) else w for w in words]
    for w in words:
        if w in ("uint", "unsigned", "positive", "non-negative", "nonnegative"):
            continue
        if w in _WORDS:
            return _WORDS[w]
    if any(w in ("uint", "unsigned") for w in words):
        return int
    return None


def doc_kinds(type_name: str | None) -> list[Any] | None:
    """The kinds a numpydoc type phrase allows, or None when any phrase is unreadable."""
    if not type_name:
        return None
    text = re.sub(r",?\s*optional\b.*$", "", type_name.strip()).strip()
    text = re.sub(r"\s*\(default[^)]*\)", "", text)
    kinds: list[Any] = []
    for phrase in _split_top(text):
        if _QUALIFIER.match(phrase.lower()):
            continue  # "2D or 3D ndarray", "ndarray, shape (M, N)", "(M, N) or (L, M, N) array"
        if phrase.startswith("{") and phrase.endswith("}"):
            inner = doc_kinds(phrase[1:-1])
            if inner is None:
                return None
            kinds.extend(inner)
            continue
        kind = _token_kind(phrase)
        if kind is None:
            return None
        kinds.append(kind)
    return kinds or None


def _default_kind(default: Any) -> Any:
    if default is None:
        return type(None)
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, (tuple, list)):
        return Sequence
    return None


def annotation_from_doc(type_name: str | None, default: Any, has_default: bool) -> Any:
    """The annotation a registered kwarg is checked against.

    ``type_name`` is the numpydoc phrase, ``default`` the signature default. The default's own type
    is always allowed (skimage documents ``sigma : scalar`` with ``sigma=1``); an undocumented
    parameter with a number/str/bool/sequence default takes its default's type (``alpha=0.5`` of
    ``hessian``). A parameter that is only an array or a callable is returned as ``Any``: the
    caller hides it. In a mix ("int or ndarray"), the array becomes a sequence (a YAML list reaches
    scikit-image as a tuple, which it reads as an array) and the callable is dropped (a pipeline
    file cannot hold one).
    """
    if type_name is None and has_default:
        dk = _default_kind(default)
        return dk if dk is not None and dk is not type(None) else Any
    kinds = doc_kinds(type_name)
    if kinds is None:
        return Any
    if has_default and (dk := _default_kind(default)) is not None and dk not in kinds:
        has_literals = any(typing.get_origin(k) is Literal for k in kinds)
        if dk is str and has_literals:
            kinds.append(Literal[default])
        elif not (dk is int and float in kinds):
            kinds.append(dk)
    if all(k in (ARRAY, CALLABLE, type(None)) for k in kinds):
        return Any
    kinds = [Sequence if k == ARRAY else k for k in kinds if k != CALLABLE]
    literals = [k for k in kinds if typing.get_origin(k) is Literal]
    others = list(dict.fromkeys(k for k in kinds if typing.get_origin(k) is not Literal))
    if literals and str in others:
        literals = []  # "str" already allows every literal
    members: list[Any] = []
    if literals:
        members.append(Literal[tuple(typing.get_args(x)[0] for x in literals)])
    members.extend(others)
    if len(members) == 1:
        return members[0]
    return typing.Union[tuple(members)]  # noqa: UP007 - built dynamically
