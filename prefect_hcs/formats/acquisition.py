"""Physical acquisition facts derived from the planes of a layout: z spacing, time interval.

Vendors record a focus position and a timestamp per plane (Harmony ``PositionZ``/``AbsTime``,
CellVoyager ``bts:Z``/``bts:Time``); the layout wants one z step and one time step for the plate.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from prefect_hcs.formats.layout import ImageRef


def z_spacing_um(images: Sequence[ImageRef], warnings: list[str], where: str) -> float | None:
    """Step between consecutive z-planes (µm) from the planes' focus positions, or None.

    The step of each (well, site, channel, timepoint) stack is measured; the median is returned.
    Stacks that disagree by more than 1 % (or 0.01 µm) add a warning.
    """
    stacks: dict[tuple[str, int, int, int], dict[int, float]] = {}
    for ref in images:
        if ref.z_um is not None:
            key = (ref.well, ref.site, ref.channel, ref.timepoint)
            stacks.setdefault(key, {})[ref.z] = ref.z_um
    steps = []
    for planes in stacks.values():
        order = sorted(planes)
        steps += [abs(planes[b] - planes[a]) / (b - a) for a, b in itertools.pairwise(order)]
    if not steps:
        return None
    step = statistics.median(steps)
    if step <= 0:
        warnings.append(f"{where}: all z-planes have the same focus position; z spacing unknown")
        return None
    if max(steps) - min(steps) > max(0.01 * step, 0.01):
        warnings.append(
            f"{where}: z steps vary from {min(steps):.4g} to {max(steps):.4g} µm; "
            f"using the median {step:.4g} µm"
        )
    return round(step, 6)


def time_interval_s(images: Sequence[ImageRef]) -> float | None:
    """Median time between the starts of consecutive timepoints (s), or None."""
    starts: dict[int, float] = {}
    for ref in images:
        if ref.acquired_at is not None:
            ts = ref.acquired_at.timestamp()
            starts[ref.timepoint] = min(starts.get(ref.timepoint, ts), ts)
    order = sorted(starts)
    if len(order) < 2:
        return None
    gaps = [(starts[b] - starts[a]) / (b - a) for a, b in itertools.pairwise(order)]
    return round(statistics.median(gaps), 3)
