"""The real BlitzGateway adapter's control flow, against a tiny fake ``omero.gateway`` module.

omero-py cannot be imported here; the fake mimics only the calls the adapter makes (their names and
keywords are checked against omero-py's source in test_omero_contract.py). This checks login
errors, reconnection after pickling or a dropped connection, and the plate-tree mapping.
"""

from __future__ import annotations

import pickle
import sys
import types
from typing import Any

import numpy as np
import pytest

from prefect_hcs.storage.omero_blitz import BlitzGatewayAdapter
from prefect_hcs.storage.omero_errors import OmeroAuthError, OmeroConnectionError, OmeroNotFound

SECRET = "hunter2-but-longer"


class PermissionDeniedException(Exception):
    """Named like Glacier2's: the adapter classifies errors by class name."""


class ConnectionLostException(Exception):
    """Named like Ice's."""


class _Obj:
    def __init__(self, oid: int, **attrs: Any) -> None:
        self._id, self.__dict__["attrs"] = oid, attrs
        self.__dict__.update(attrs)

    def getId(self) -> int:
        return self._id

    def getName(self) -> str:
        return self.attrs.get("name", "")


class _Opts(dict):
    def setOmeroGroup(self, value: Any = None) -> None:
        self["omero.group"] = value

    def getOmeroGroup(self) -> Any:
        return self.get("omero.group")


class FakeGateway:
    instances: list[FakeGateway] = []
    fail_next: list[Exception] = []

    def __init__(self, username, passwd, host=None, port=None, secure=None, group=None) -> None:
        self.passwd, self.SERVICE_OPTS, self.closed = passwd, _Opts(), False
        FakeGateway.instances.append(self)

    def connect(self) -> bool:
        return self.passwd == SECRET

    def getLastError(self) -> Exception:
        return PermissionDeniedException("Password check failed")

    def getGroupFromContext(self) -> _Obj:
        return _Obj(1, name="lab")

    def keepAlive(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def getObject(self, obj_type: str, oid: int) -> Any:
        if FakeGateway.fail_next:
            raise FakeGateway.fail_next.pop()
        if obj_type == "Plate" and oid == 7:
            pixels = _Obj(0, getPlane=lambda z, c, t: np.full((2, 3), z * 100 + c * 10 + t))
            image = _Obj(
                70,
                name="img",
                getSizeZ=lambda: 2,
                getSizeC=lambda: 3,
                getSizeT=lambda: 1,
                getSizeY=lambda: 2,
                getSizeX=lambda: 3,
                getPixelsType=lambda: "uint16",
                getChannelLabels=lambda: ["DAPI", "GFP", "RFP"],
                getPrimaryPixels=lambda: pixels,
            )
            sample = _Obj(0, getImage=lambda: image)
            wells = [
                _Obj(12, row=1, column=2, listChildren=lambda: iter([sample])),
                _Obj(11, row=0, column=0, listChildren=lambda: iter([sample])),
            ]
            return _Obj(7, name="screen", listChildren=lambda: iter(wells))
        if obj_type == "Image" and oid == 70:
            well = next(self.getObject("Plate", 7).listChildren())
            return next(well.listChildren()).getImage()
        return None


@pytest.fixture
def fake_omero(monkeypatch: pytest.MonkeyPatch) -> type[FakeGateway]:
    gateway = types.ModuleType("omero.gateway")
    gateway.BlitzGateway = FakeGateway  # type: ignore[attr-defined]
    omero = types.ModuleType("omero")
    omero.gateway = gateway  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omero", omero)
    monkeypatch.setitem(sys.modules, "omero.gateway", gateway)
    FakeGateway.instances, FakeGateway.fail_next = [], []
    return FakeGateway


def test_wrong_password_is_an_auth_error(fake_omero: type[FakeGateway]) -> None:
    adapter = BlitzGatewayAdapter("omero.example.org", "alice", "wrong-" + SECRET)
    with pytest.raises(OmeroAuthError, match="login failed for user 'alice'") as info:
        adapter.get_plate(7)
    assert SECRET not in str(info.value)


def test_group_membership_is_checked(fake_omero: type[FakeGateway]) -> None:
    with pytest.raises(OmeroAuthError, match="not a member of OMERO group 'other'"):
        BlitzGatewayAdapter("h", "alice", SECRET, group="other").connect()
    BlitzGatewayAdapter("h", "alice", SECRET, group="lab").connect()


def test_plate_tree_and_planes(fake_omero: type[FakeGateway]) -> None:
    adapter = BlitzGatewayAdapter("h", "alice", SECRET)
    plate = adapter.get_plate(7)
    assert [(w.row, w.column) for w in plate.wells] == [(0, 0), (1, 2)]  # sorted, 0-based
    image = plate.wells[0].images[0]
    assert (image.size_z, image.size_c, image.size_t, image.dtype) == (2, 3, 1, "uint16")
    assert image.channel_names == ("DAPI", "GFP", "RFP")
    assert adapter.read_plane(70, 1, 2, 0)[0, 0] == 120
    assert fake_omero.instances[0].SERVICE_OPTS.getOmeroGroup() == "-1"  # reads span groups
    with pytest.raises(OmeroNotFound, match="Plate 8"):
        adapter.get_plate(8)


def test_dropped_connection_is_transient_and_reconnects(fake_omero: type[FakeGateway]) -> None:
    adapter = BlitzGatewayAdapter("h", "alice", SECRET)
    adapter.get_plate(7)
    fake_omero.fail_next.append(ConnectionLostException())
    with pytest.raises(OmeroConnectionError):
        adapter.get_plate(7)
    assert fake_omero.instances[0].closed
    adapter.get_plate(7)
    assert len(fake_omero.instances) == 2


def test_pickling_drops_the_connection(fake_omero: type[FakeGateway]) -> None:
    adapter = BlitzGatewayAdapter("h", "alice", SECRET)
    adapter.connect()
    clone = pickle.loads(pickle.dumps(adapter))
    assert clone._conn is None
    clone.get_plate(7)  # reconnects lazily in the new "process"
    assert len(fake_omero.instances) == 2
