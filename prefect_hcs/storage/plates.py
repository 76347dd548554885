"""One entry point for every plate source: file-based microscopes (formats) or OMERO (storage)."""

from __future__ import annotations

from typing import Any

from prefect_hcs.formats.layout import PlateLayout


def discover_plate(url: str, storage_options: dict[str, Any] | None = None) -> PlateLayout:
    """The layout of the plate at `url` (``omero://plate_<id>`` or any fsspec folder URL)."""
    if url.startswith("omero://"):
        from prefect_hcs.storage.omero_plate import open_omero_plate

        return open_omero_plate(url, storage_options or {})
    from prefect_hcs.formats.detect import open_plate

    return open_plate(url, storage_options)
