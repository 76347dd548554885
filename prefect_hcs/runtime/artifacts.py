"""Content of the plate-run artifacts (tables and markdown), as plain data. No Prefect here.

Kept apart from `monitoring` so what the UI shows can be tested without a server, and so every
artifact stays small: one row per step or setting or well, thumbnails within a size budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from prefect_hcs.formats.wells import WellId, WellIdError, row_name
from prefect_hcs.pipeline.plan import PlatePlan, StepPlan
from prefect_hcs.runtime import thumbnails


def function_label(plan: StepPlan) -> str:
    """The step's function chain as text ('a → b', or 'key: a → b; ...' per group) for tables."""
    if isinstance(plan.function, dict):
        return "; ".join(
            f"{k}: " + " → ".join(c.name for c in chain) for k, chain in plan.function.items()
        )
    return " → ".join(c.name for c in plan.function)


def plan_rows(plan: PlatePlan) -> list[dict[str, str]]:
    """One row per step: what runs, the backends (and why), where its outputs go."""
    first = {p.step_index: p for p in plan.step_plans if p.well == plan.wells[0]}
    rows = []
    for idx, name in enumerate(plan.steps):
        p = first[idx]
        output = (plan.output.zarr_url or p.output_dir) if p.is_last else p.output_dir
        rows.append(
            {
                "step": name,
                "function": function_label(p),
                "variable_components": ", ".join(p.variable_components),
                "read": p.read_backend,
                "write": p.write_backend,
                "materialized": p.materialized_backend,
                "output": output,
                "checkpoints": p.materialized_output_dir or "",
                "tables": ", ".join(
                    plan.output.tables.get(f"{name}.{t}", t) for t in p.special_outputs
                ),
                "why": p.backend_reasons["materialized_backend"],
            }
        )
    return rows


def config_rows(plan: PlatePlan) -> list[dict[str, str]]:
    """One row per resolved setting and source: value, the layer it came from, which steps.

    Identical values from the same place are merged across steps ("all"), so the table has
    about one row per setting instead of one per setting and step.
    """
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for step in plan.steps:
        for key, item in plan.resolved_config.get(step, {}).items():
            src = item.get("source", {})
            layer = str(src.get("layer", "?"))
            if layer == "default" and src.get("static_override"):
                layer = "default (static override)"
            where = f"{src.get('config_class', '')}.{src.get('field', '')}"
            if layer != "default" and src.get("path"):
                where = str(src["path"])
            value = json.dumps(item.get("value"), default=str)
            groups.setdefault((key, value, layer, where), []).append(step)
    rows = []
    for (key, value, layer, where), steps in sorted(groups.items()):
        rows.append(
            {
                "setting": key,
                "value": value,
                "layer": layer,
                "from": where,
                "steps": "all" if len(steps) == len(plan.steps) else ", ".join(steps),
            }
        )
    return rows


def summary_rows(
    wells: Iterable[str],
    status: dict[str, str],
    seconds: dict[str, float],
    nuclei: dict[str, int],
    details: dict[str, str],
) -> list[dict[str, Any]]:
    """One row per well: completed / failed / skipped (resumed) / not run, time, nuclei."""
    return [
        {
            "well": w,
            "status": status.get(w, "not run"),
            "seconds": round(seconds[w], 2) if w in seconds else None,
            "nuclei": nuclei.get(w),
            "detail": details.get(w, ""),
        }
        for w in wells
    ]


def nuclei_from_rows(rows: Iterable[dict[str, str]]) -> dict[str, int]:
    """{well: nuclei} summed over a measurements table's rows (tables without counts: {})."""
    counts: dict[str, int] = {}
    for row in rows:
        value = row.get("nuclei_count")
        if value in (None, "") or "well" not in row:
            continue
        counts[row["well"]] = counts.get(row["well"], 0) + int(float(value))
    return counts


def thumbnails_markdown(plate_id: str, pngs: dict[str, bytes], budget: int, note: str = "") -> str:
    """A plate map (rows × columns) of embedded PNGs, shrunk or cut to stay within `budget`.

    `data:` URIs are the only way to show images from a plain Prefect server (the image artifact
    takes a URL, and nothing serves the files), so the size is the artifact's size.
    """
    header = [f"# Wells of `{plate_id}` (channel 1, max projection)", ""]
    if not pngs:
        return "\n".join([*header, note or "_no thumbnails were written_"])
    chosen: dict[str, str] = {}
    for px in (thumbnails.THUMB_PX, 64, 48, 32):
        small = {w: thumbnails.data_uri(thumbnails.shrink_png(b, px)) for w, b in pngs.items()}
        chosen = small
        if sum(len(u) + len(w) + 8 for w, u in small.items()) <= budget:
            break
    left_out: list[str] = []
    used = 0
    for w in sorted(chosen):
        used += len(chosen[w]) + len(w) + 8
        if used > budget:
            left_out.append(w)
    for w in left_out:
        chosen.pop(w)
    lines = [*header, *_grid(chosen)]
    if left_out:
        lines += ["", f"_{len(left_out)} more well(s) not shown (artifact size budget)._"]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def _grid(uris: dict[str, str]) -> list[str]:
    """A markdown table laid out like the plate; wells with odd names go in one row."""
    cells: dict[tuple[int, int], str] = {}
    odd: list[str] = []
    for well, uri in uris.items():
        try:
            w = WellId.parse(well)
        except WellIdError:
            odd.append(f"![{well}]({uri}) {well}")
            continue
        cells[(w.row_index, w.column)] = f"![{well}]({uri})"
    lines: list[str] = []
    if cells:
        rows = sorted({r for r, _ in cells})
        cols = sorted({c for _, c in cells})
        lines.append("| | " + " | ".join(str(c) for c in cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for r in rows:
            cells_of_row = " | ".join(cells.get((r, c), "") for c in cols)
            lines.append(f"| **{row_name(r)}** | {cells_of_row} |")
    if odd:
        lines += ["", *odd]
    return lines
