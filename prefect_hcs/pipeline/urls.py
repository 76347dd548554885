"""URL arithmetic the compiler needs besides joining (`formats.fsio.join_url`): parent, normal
form, a plane's full URL, an OMERO plate's URL.

Plain strings in, plain strings out; fsspec URLs (``s3://b/k``), ``omero://`` virtual paths and
local paths alike. Nothing here touches a filesystem.
"""

from __future__ import annotations

import posixpath

from prefect_hcs.formats.layout import PlateLayout

__all__ = ["normal_url", "omero_plate_url", "parent_and_name", "source_url"]


def parent_and_name(url: str) -> tuple[str, str]:
    """(parent URL, last name) of `url`: ``s3://b/plates/P1`` -> (``s3://b/plates``, ``P1``)."""
    url = url.rstrip("/")
    if "://" in url:
        proto, rest = url.split("://", 1)
        parent, name = posixpath.split(rest)
        return (f"{proto}://{parent}" if parent else f"{proto}://"), name
    parent, name = posixpath.split(url)
    return parent or ".", name


def normal_url(url: str) -> str:
    """Comparable form of a URL: local paths absolute and normalised, ``file://`` dropped."""
    url = url.rstrip("/")
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        url = posixpath.normpath(posixpath.abspath(url))
    return url


def source_url(layout: PlateLayout, path: str) -> str:
    """Full URL of a plane path found by a handler (handlers return protocol-less paths)."""
    if "://" in path:
        return path
    if "://" in layout.url:
        proto = layout.url.split("://", 1)[0]
        return f"{proto}://{path.lstrip('/')}" if proto != "file" else path
    return path


def omero_plate_url(layout: PlateLayout) -> str:
    """``omero://plate_<id>`` of an OMERO plate layout (its plate id is ``plate_<id>``)."""
    return f"omero://plate_{layout.plate_id.removeprefix('plate_')}"
