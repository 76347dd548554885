"""One rule for every vendor: which planes are *absent* (never acquired) and which are *missing*.

Instruments routinely acquire mixed plates: one channel only at a single focal plane, one only at
some timepoints. Such a (channel, z, timepoint) is absent for the whole plate; the run fills it with
zeros and records it. A plane that exists for some (well, site) but not for another one, or that the
vendor's metadata lists but whose file is gone, is missing: the plate is damaged, and the compile
step stops with the files named, before any well is processed.

Exports also pad planes the instrument did not acquire with byte-identical copies of other planes
(same well, site and channel). `find_padded` finds them cheaply: file sizes first (free from a
folder listing), then a hash of the first 16 KiB of same-size files, then a full hash of the rest.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.layout import ImageRef, PlaneKey, PlateError
from prefect_hcs.formats.wells import split_well

__all__ = ["find_padded", "plane_completeness", "plate_sort_key"]

_HEAD_BYTES = 16 * 1024
_SHOWN = 10

_Key = tuple[str, int, int, int, int]  # (well, site, channel, z, timepoint)


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _check_duplicates(where: str, images: Sequence[ImageRef]) -> dict[_Key, str]:
    seen: dict[_Key, str] = {}
    duplicates: list[str] = []
    for ref in images:
        key = (ref.well, ref.site, ref.channel, ref.z, ref.timepoint)
        if key in seen:
            duplicates.append(f"{key}: {seen[key]} and {ref.path}")
        seen[key] = ref.path
    if duplicates:
        raise PlateError(
            f"{len(duplicates)} planes of {where} are present more than once "
            f"((well, site, channel, z, timepoint): files): {_listed(duplicates)}. "
            "Remove the extra files."
        )
    return seen


def plane_completeness(
    where: str,
    images: Sequence[ImageRef],
    *,
    listed_missing: Iterable[str] = (),
    axes: tuple[Iterable[int], Iterable[int], Iterable[int]] | None = None,
    fields: Iterable[tuple[str, int]] | None = None,
    hint: str = "",
) -> tuple[PlaneKey, ...]:
    """The absent planes of a plate; raises PlateError for missing or duplicated planes.

    Args:
        where: The plate as the user knows it (URL or folder), for messages.
        images: Every z-plane found (projections excluded).
        listed_missing: Files the vendor metadata lists but that do not exist (always missing).
        axes: (channels, z-planes, timepoints) of the plate when it has more than its z-planes
            show (e.g. a channel taken only as a projection); default: those of `images`.
        fields: The plate's (well, site) pairs when `images` may not show them all (e.g. when
            checking projections against the z-stack's fields); default: wells x sites found.
        hint: Extra context appended to messages (e.g. the metadata file).

    Returns:
        One `PlaneKey` per (well, site) of the plate and per (channel, z, timepoint) that no
        (well, site) has: the planes the instrument did not acquire. Sorted like the images.

    Raises:
        PlateError: no images; the same plane twice; listed files missing; or a (channel, z, t)
            present for some (well, site) but not for all of them.
    """
    if not images:
        raise PlateError(f"no images found in {where}{hint}")
    gone = sorted(listed_missing)
    if gone:
        raise PlateError(
            f"{len(gone)} image file(s) listed in the metadata of {where} do not exist: "
            f"{_listed(gone)}.{hint} Copy the plate again, completely."
        )
    seen = _check_duplicates(where, images)
    if fields is None:
        wells = sorted({r.well for r in images}, key=split_well)
        fields = itertools.product(wells, sorted({r.site for r in images}))
    fields = sorted(set(fields), key=lambda f: (split_well(f[0]), f[1]))
    acquired = {(r.channel, r.z, r.timepoint) for r in images}
    missing = [
        (w, s, c, z, t)
        for (c, z, t) in sorted(acquired)
        for (w, s) in fields
        if (w, s, c, z, t) not in seen
    ]
    if missing:
        missing.sort(key=lambda k: (split_well(k[0]), *k[1:]))
        shown = [f"({w}, {s}, {c}, {z}, {t})" for w, s, c, z, t in missing]
        raise PlateError(
            f"{len(missing)} planes missing in {where}: each (channel, z, timepoint) the plate "
            "has must exist for every well and site. Missing (well, site, channel, z, timepoint): "
            f"{_listed(shown)}.{hint} Re-export the plate, or drop the incomplete wells."
        )
    if axes is None:
        axes = ({r.channel for r in images}, {r.z for r in images}, {r.timepoint for r in images})
    return _absent(fields, acquired, axes)


def _absent(
    fields: list[tuple[str, int]],
    acquired: set[tuple[int, int, int]],
    axes: tuple[Iterable[int], Iterable[int], Iterable[int]],
) -> tuple[PlaneKey, ...]:
    grid = [sorted(set(axis)) for axis in axes]
    never = [cz for cz in itertools.product(*grid) if cz not in acquired]
    return tuple(
        PlaneKey(well=w, site=s, channel=c, z=z, timepoint=t)
        for (w, s) in fields
        for (c, z, t) in sorted(never, key=lambda k: (k[2], k[0], k[1]))
    )


def _digest(fs: AbstractFileSystem, path: str, head_only: bool) -> str:
    sha = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        if head_only:
            sha.update(fh.read(_HEAD_BYTES))
        else:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def _same_bytes(
    fs: AbstractFileSystem, group: list[ImageRef], head_only: bool
) -> list[list[ImageRef]]:
    """Split a group of same-size files into groups whose (head or full) hashes agree."""
    by_hash: dict[str, list[ImageRef]] = defaultdict(list)
    for ref in group:
        by_hash[_digest(fs, ref.path, head_only)].append(ref)
    return [g for g in by_hash.values() if len(g) > 1]


def find_padded(
    fs: AbstractFileSystem,
    images: Sequence[ImageRef],
    sizes: Mapping[str, int] | None = None,
) -> tuple[str, ...]:
    """Paths of planes that are byte-identical copies of another plane of their well/site/channel.

    The first plane of each identical group (a projection first, then in (timepoint, z) order) is
    the original; the others are padding. Only files of equal size are read, and only their first 16 KiB unless those agree.

    Args:
        fs: The plate's filesystem.
        images: The planes to check; include the projections when an export may pad the stack
            with copies of them (a projection is never itself padding).
        sizes: {path: bytes} when the caller already has them from a listing; else `fs.size`.
    """
    groups: dict[tuple[str, int, int, int], list[ImageRef]] = defaultdict(list)
    for ref in images:
        size = sizes[ref.path] if sizes is not None and ref.path in sizes else fs.size(ref.path)
        groups[(ref.well, ref.site, ref.channel, int(size))].append(ref)
    padded: list[str] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        for head_group in _same_bytes(fs, group, head_only=True):
            for same in _same_bytes(fs, head_group, head_only=False):
                same.sort(key=lambda r: (r.projection is None, r.timepoint, r.z))
                padded += [r.path for r in same[1:]]
    return tuple(sorted(padded))


def plate_sort_key(ref: ImageRef) -> tuple[int, int, int, int, int, int]:
    """Stable plane order: well (row, column), site, timepoint, channel, z."""
    row, col = split_well(ref.well)
    return (row, col, ref.site, ref.timepoint, ref.channel, ref.z)
