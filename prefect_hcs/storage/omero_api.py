"""The omero-py API the real adapter (`omero_blitz`) uses, checked against omero-py's source.

``tests/test_omero_contract.py`` reads `omero_blitz` with ``ast`` and checks that every omero-py
name and keyword it uses is listed here, and reads omero-py's installed source to check that each
entry exists there (with inherited members and keywords). Data only; `_members` writes the
entries used under the name omero-py defines them by, one class at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OMERO_API", "OMERO_OBJECT_TYPES", "ApiUse"]


@dataclass(frozen=True)
class ApiUse:
    """One name the adapter uses on an omero-py object, and where omero-py defines it.

    `source` is relative to site-packages; `member` is looked up on `cls` and its bases in that
    file (``None`` cls: a module-level name). Attributes reached through omero-py's dynamic
    ``__getattr__`` (``well.row``, ``file.getPath()``) point at the generated model class.
    """

    name: str
    source: str
    cls: str | None
    member: str
    keywords: tuple[str, ...] = ()


_GW = "omero/gateway/__init__.py"


def _members(cls: str | None, *names: str, source: str = _GW) -> tuple[ApiUse, ...]:
    """Entries for names the adapter uses as omero-py defines them on ``cls`` in ``source``."""
    return tuple(ApiUse(name, source, cls, name) for name in names)


OMERO_API: tuple[ApiUse, ...] = (
    ApiUse("BlitzGateway", _GW, "BlitzGateway", "__init__", ("host", "port", "secure", "group")),
    *_members(
        "BlitzGateway",
        "connect",
        "getLastError",
        "keepAlive",
        "close",
        "getGroupFromContext",
        "getObject",
        "SERVICE_OPTS",
    ),
    ApiUse(
        "createOriginalFileFromFileObj",
        _GW,
        "BlitzGateway",
        "createOriginalFileFromFileObj",
        ("mimetype",),
    ),
    ApiUse("deleteObjects", _GW, "BlitzGateway", "deleteObjects", ("wait",)),
    *_members("ServiceOptsDict", "setOmeroGroup", "getOmeroGroup", source="omero/gateway/utils.py"),
    *_members("BlitzObjectWrapper", "getName", "getId", "getDetails", "linkAnnotation", "save"),
    ApiUse("listAnnotations", _GW, "BlitzObjectWrapper", "listAnnotations", ("ns",)),
    *_members("DetailsWrapper", "getGroup"),
    *_members("PlateWrapper", "listChildren"),
    *_members("WellWrapper", "listChildren"),
    # Reached through omero-py's dynamic __getattr__: well.row is WellI.getRow().
    ApiUse("row", "omero_model_WellI.py", "WellI", "getRow"),
    ApiUse("column", "omero_model_WellI.py", "WellI", "getColumn"),
    *_members("WellSampleWrapper", "getImage"),
    *_members(
        "ImageWrapper",
        "getSizeZ",
        "getSizeC",
        "getSizeT",
        "getSizeY",
        "getSizeX",
        "getPixelsType",
        "getChannelLabels",
        "getPrimaryPixels",
    ),
    *_members("PixelsWrapper", "getPlane"),
    *_members(None, "FileAnnotationWrapper", "MapAnnotationWrapper"),
    *_members("AnnotationWrapper", "setNs", "getNs"),
    *_members(
        "FileAnnotationWrapper",
        "setFile",
        "getFile",
        "getFileName",
        "getFileSize",
        "getFileInChunks",
    ),
    *_members("OriginalFileI", "getPath", "getMimetype", source="omero_model_OriginalFileI.py"),
    *_members("MapAnnotationWrapper", "setValue", "getValue"),
)

#: Object types passed to ``getObject``; each must be a key of omero-py's KNOWN_WRAPPERS.
OMERO_OBJECT_TYPES = ("Plate", "Well", "Image", "Annotation", "FileAnnotation")
