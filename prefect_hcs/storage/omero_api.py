"""The omero-py API the real adapter (`omero_blitz`) uses, checked against omero-py's source.

``tests/test_omero_contract.py`` reads `omero_blitz` with ``ast`` and checks that every omero-py
name and keyword it uses is listed here, and reads omero-py's installed source to check that each
entry exists there (with inherited members and keywords). Data only.
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
OMERO_API: tuple[ApiUse, ...] = (
    ApiUse("BlitzGateway", _GW, "BlitzGateway", "__init__", ("host", "port", "secure", "group")),
    ApiUse("connect", _GW, "BlitzGateway", "connect"),
    ApiUse("getLastError", _GW, "BlitzGateway", "getLastError"),
    ApiUse("keepAlive", _GW, "BlitzGateway", "keepAlive"),
    ApiUse("close", _GW, "BlitzGateway", "close"),
    ApiUse("getGroupFromContext", _GW, "BlitzGateway", "getGroupFromContext"),
    ApiUse("getObject", _GW, "BlitzGateway", "getObject"),
    ApiUse(
        "createOriginalFileFromFileObj",
        _GW,
        "BlitzGateway",
        "createOriginalFileFromFileObj",
        ("mimetype",),
    ),
    ApiUse("deleteObjects", _GW, "BlitzGateway", "deleteObjects", ("wait",)),
    ApiUse("SERVICE_OPTS", _GW, "BlitzGateway", "SERVICE_OPTS"),
    ApiUse("setOmeroGroup", "omero/gateway/utils.py", "ServiceOptsDict", "setOmeroGroup"),
    ApiUse("getOmeroGroup", "omero/gateway/utils.py", "ServiceOptsDict", "getOmeroGroup"),
    ApiUse("getName", _GW, "BlitzObjectWrapper", "getName"),
    ApiUse("getId", _GW, "BlitzObjectWrapper", "getId"),
    ApiUse("getDetails", _GW, "BlitzObjectWrapper", "getDetails"),
    ApiUse("getGroup", _GW, "DetailsWrapper", "getGroup"),
    ApiUse("listChildren", _GW, "PlateWrapper", "listChildren"),
    ApiUse("listChildren", _GW, "WellWrapper", "listChildren"),
    ApiUse("row", "omero_model_WellI.py", "WellI", "getRow"),
    ApiUse("column", "omero_model_WellI.py", "WellI", "getColumn"),
    ApiUse("getImage", _GW, "WellSampleWrapper", "getImage"),
    ApiUse("getSizeZ", _GW, "ImageWrapper", "getSizeZ"),
    ApiUse("getSizeC", _GW, "ImageWrapper", "getSizeC"),
    ApiUse("getSizeT", _GW, "ImageWrapper", "getSizeT"),
    ApiUse("getSizeY", _GW, "ImageWrapper", "getSizeY"),
    ApiUse("getSizeX", _GW, "ImageWrapper", "getSizeX"),
    ApiUse("getPixelsType", _GW, "ImageWrapper", "getPixelsType"),
    ApiUse("getChannelLabels", _GW, "ImageWrapper", "getChannelLabels"),
    ApiUse("getPrimaryPixels", _GW, "ImageWrapper", "getPrimaryPixels"),
    ApiUse("getPlane", _GW, "PixelsWrapper", "getPlane"),
    ApiUse("linkAnnotation", _GW, "BlitzObjectWrapper", "linkAnnotation"),
    ApiUse("listAnnotations", _GW, "BlitzObjectWrapper", "listAnnotations", ("ns",)),
    ApiUse("FileAnnotationWrapper", _GW, None, "FileAnnotationWrapper"),
    ApiUse("MapAnnotationWrapper", _GW, None, "MapAnnotationWrapper"),
    ApiUse("setNs", _GW, "AnnotationWrapper", "setNs"),
    ApiUse("getNs", _GW, "AnnotationWrapper", "getNs"),
    ApiUse("setFile", _GW, "FileAnnotationWrapper", "setFile"),
    ApiUse("getFile", _GW, "FileAnnotationWrapper", "getFile"),
    ApiUse("getFileName", _GW, "FileAnnotationWrapper", "getFileName"),
    ApiUse("getFileSize", _GW, "FileAnnotationWrapper", "getFileSize"),
    ApiUse("getFileInChunks", _GW, "FileAnnotationWrapper", "getFileInChunks"),
    ApiUse("getPath", "omero_model_OriginalFileI.py", "OriginalFileI", "getPath"),
    ApiUse("getMimetype", "omero_model_OriginalFileI.py", "OriginalFileI", "getMimetype"),
    ApiUse("setValue", _GW, "MapAnnotationWrapper", "setValue"),
    ApiUse("getValue", _GW, "MapAnnotationWrapper", "getValue"),
    ApiUse("save", _GW, "BlitzObjectWrapper", "save"),
)

#: Object types passed to ``getObject``; each must be a key of omero-py's KNOWN_WRAPPERS.
OMERO_OBJECT_TYPES = ("Plate", "Well", "Image", "Annotation", "FileAnnotation")
