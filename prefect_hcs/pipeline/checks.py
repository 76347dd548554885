"""Compile-time checks against hostile or mistaken input: names, write paths, sizes, partial steps.

Pure functions over the pipeline, the resolved config and the planned URLs; each returns a list of
problems (one line each, naming the step/field/file and the fix) that the compiler reports
together with its own. Nothing here reads a file.

* **Identifiers.** Step names and table names become folder and file names (`tables/<step>/`,
  `<step>_<table>.csv`) and plate-table keys (`<step>.<table>`), so they must be identifiers:
  a letter first, then letters, digits, ``_`` or ``-``, at most 64 characters
  (`IDENTIFIER_RULE`). ``../../escape``, ``seg.v2``, ``a/b`` or ``my step`` are refused.
* **Containment.** Every URL a run writes must resolve (after normalising ``.``/``..``) inside
  the root it belongs to (the output root, the step's checkpoint root, the intermediates root).
* **Sizes.** The declared plane and the whole well (source stack, and the stitched canvas) must
  stay under `limits_config.max_plane_pixels` / `limits_config.max_well_gib`.
* **Partial reshaping.** A step that changes what the output plate declares per well (the
  number of fields, or their y/x size: stitching) cannot be limited to some wells: the others
  would reach the output with another shape and fail at the last step.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Set
from typing import Any

import numpy as np

IDENTIFIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
IDENTIFIER_RULE = (
    "a letter first, then letters, digits, '_' or '-', at most 64 characters "
    "(it names folders, files and table columns)"
)


def identifier_problem(kind: str, name: str) -> str | None:
    """A problem line if `name` is not an identifier, else None."""
    if isinstance(name, str) and IDENTIFIER_RE.match(name):
        return None
    return f"{kind} {name!r} is not a valid name: use {IDENTIFIER_RULE}"


def table_name_problems(where: str, tables: Iterable[str]) -> list[str]:
    """Problems with the table (special output) names a step's functions declare."""
    return [f"{where}: {p}" for t in tables if (p := identifier_problem("table name", t))]


def path_setting_problems(resolved: Any, where: str, sections: tuple[str, ...]) -> list[str]:
    """Path-like settings that would step out of their folder ('..', or '/' in a suffix)."""
    problems = []
    for section in sections:
        for field in ("global_output_folder", "sub_dir", "output_dir_suffix"):
            dotted = f"{section}.{field}"
            try:
                value = resolved.value(dotted)
            except (KeyError, AttributeError):
                continue
            text = str(value or "").replace("\\", "/")
            bad = ".." in text.split("/") or (field == "output_dir_suffix" and "/" in text)
            if field == "global_output_folder" and section == "path_planning_config":
                continue  # reported by the compiler with its own wording
            if bad:
                problems.append(
                    f"{where}{dotted} = {value!r} ({resolved.source(dotted).describe()}) would "
                    "write outside its folder: give a plain folder name (no '..'"
                    + (", no '/'" if field == "output_dir_suffix" else "")
                    + ")"
                )
    return problems


def _norm(url: str) -> str:
    if "://" in url:
        proto, rest = url.split("://", 1)
        return f"{proto}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return posixpath.normpath(url)


def inside(url: str, root: str) -> bool:
    """True if `url` normalises to `root` or a path below it (and has no '..' steps)."""
    if ".." in url.replace("\\", "/").split("/"):
        return False
    u, r = _norm(url), _norm(root).rstrip("/")
    return u == r or u.startswith(r + "/")


def write_containment_problems(writes: Iterable[tuple[str, str, str]]) -> list[str]:
    """`writes`: (what, url, root). One problem per URL that resolves outside its root."""
    return [
        f"{what} would be written to {url}, outside {root}: rename the step or fix the folder "
        "settings so every output stays inside the output folder"
        for what, url, root in writes
        if url and root and not inside(url, root)
    ]


def size_problems(
    *,
    plane_yx: tuple[int, int],
    dtype: str,
    stack: dict[str, int],
    canvas: tuple[int, tuple[int, int]],
    max_plane_pixels: int,
    max_well_gib: float,
    source: tuple[str, str],
) -> list[str]:
    """Declared geometry against the ceilings. `canvas` = (fields per well, (y, x)) at the end;
    `source` = (description of max_plane_pixels' layer, of max_well_gib's layer)."""
    problems = []
    pixels = plane_yx[0] * plane_yx[1]
    if pixels > max_plane_pixels:
        problems.append(
            f"the plate's planes are {plane_yx[0]}×{plane_yx[1]} = {pixels:,} pixels, above "
            f"limits_config.max_plane_pixels = {max_plane_pixels:,} ({source[0]}). If the plate "
            "really has such planes, raise the limit; otherwise a TIFF header is wrong"
        )
    itemsize = np.dtype(dtype).itemsize
    others = math.prod(v for k, v in stack.items() if k != "site")
    source_bytes = others * stack.get("site", 1) * pixels * itemsize
    fields, (cy, cx) = canvas
    canvas_bytes = others * fields * cy * cx * itemsize
    peak = max(source_bytes, canvas_bytes)
    if peak > max_well_gib * 2**30:
        what = "stitched canvas" if canvas_bytes > source_bytes else "source planes"
        problems.append(
            f"one well needs {peak / 2**30:,.1f} GiB in memory ({what}: "
            f"{_stack_text(stack)} planes of {plane_yx[0]}×{plane_yx[1]} {dtype}), above "
            f"limits_config.max_well_gib = {max_well_gib:g} ({source[1]}). Raise the limit if "
            "the worker has the memory, or select fewer sites/z-planes"
        )
    return problems


def _stack_text(stack: dict[str, int]) -> str:
    return " × ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in stack.items())


def partial_reshape_problem(
    where: str, before: dict[str, Any], after: dict[str, Any], step_wells: Set[str], wells: tuple
) -> str | None:
    """A step that changes a well's fields or their size but applies to some wells only."""
    if before == after or set(wells) <= step_wells:
        return None
    skipped = [w for w in wells if w not in step_wells]
    shown = ", ".join(skipped[:6]) + ("…" if len(skipped) > 6 else "")
    return (
        f"{where}: changes each well's fields ({_shape_text(before)} → {_shape_text(after)}) "
        f"but its step_well_filter_config skips {len(skipped)} well(s) ({shown}), which would "
        "reach the output in another shape. Apply shape-changing steps to every well (filter "
        "the wells of the whole run with well_filter_config instead)"
    )


def _shape_text(shape: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in shape.items())
