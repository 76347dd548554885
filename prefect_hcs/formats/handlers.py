"""The one protocol every microscope vendor implements, and the registry `detect` reads.

A vendor module defines a `PlateHandler` (``name``, ``detect``, ``open``) and registers it with
`register` when imported; `prefect_hcs.formats` imports every vendor module, so adding a vendor
means writing its module (and listing its public opener in the package's ``__init__``). `detect`
never imports a vendor, so vendor modules may use everything below it without an import cycle.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.layout import PlateLayout

__all__ = ["Evidence", "PlateHandler", "get_handler", "handlers", "register"]


class Evidence(IntEnum):
    """How sure a handler is that a folder is its plate; the strongest claim wins."""

    NONE = 0
    #: only file names fit the vendor's pattern (e.g. MetaXpress TIFFs without an .HTD)
    NAMES = 1
    #: the vendor's own metadata file is there (.HTD, Index.idx.xml, MeasurementData.mlf)
    METADATA = 2


@runtime_checkable
class PlateHandler(Protocol):
    """Reads one vendor's plates: recognise a folder, then discover its layout."""

    #: the ``format=`` value naming this vendor ("imagexpress", "phenix", ...)
    name: str

    def detect(self, fs: AbstractFileSystem, root: str) -> Evidence:
        """How strongly the folder `root` looks like this vendor's plate (reads listings only)."""
        ...

    def open(
        self, url: str, storage_options: dict[str, Any] | None, fs: AbstractFileSystem
    ) -> PlateLayout:
        """The plate's layout, headers only plus one decoded plane per TIFF compression."""
        ...


_HANDLERS: dict[str, PlateHandler] = {}


def register(handler: PlateHandler) -> PlateHandler:
    """Make `handler` available to `open_plate`; a later one of the same name replaces it."""
    _HANDLERS[handler.name] = handler
    return handler


def handlers() -> tuple[PlateHandler, ...]:
    """Every registered handler, in registration order (which breaks ties between claims)."""
    return tuple(_HANDLERS.values())


def get_handler(name: str) -> PlateHandler | None:
    """The handler registered as `name`, if any."""
    return _HANDLERS.get(name)
