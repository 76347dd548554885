"""The OMERO credentials Block: fields, secrecy of the password, and use by the omero filesystem."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest

from prefect_hcs.blocks.omero_credentials import OmeroCredentials
from prefect_hcs.storage.omero_blitz import BlitzGatewayAdapter
from prefect_hcs.storage.omero_errors import OmeroAuthError
from prefect_hcs.storage.omero_fs import OmeroFileSystem
from prefect_hcs.testing.omero_standin import (
    StandinAdapter,
    StandinServer,
    standin_host,
    standin_options,
)

SECRET = "Tr0ub4dor-and-3"


def _standin(tmp_path: Path) -> tuple[StandinServer, int]:
    server = StandinServer.create(tmp_path / "omero")
    server.add_user("alice", SECRET, group="lab")
    plate_id = server.add_plate("p", "lab", {"A01": [np.ones((1, 1, 1, 4, 4), "uint16")]})
    return server, plate_id


def test_block_metadata_and_field_descriptions() -> None:
    assert OmeroCredentials.get_block_type_slug() == "omero-credentials"
    assert OmeroCredentials.get_block_type_name() == "OMERO Credentials"
    assert OmeroCredentials.get_description()
    assert str(OmeroCredentials._documentation_url).endswith("docs/omero.md")
    fields = OmeroCredentials.model_fields
    assert {"host", "port", "username", "password", "group", "secure"} <= set(fields)
    assert fields["port"].default == 4064 and fields["secure"].default is True
    assert "standin_dir" not in fields  # a block cannot point a run at a test double
    for name in ("host", "port", "username", "password", "group", "secure"):
        assert fields[name].description and fields[name].description.endswith("."), name
    assert "password" in OmeroCredentials.model_json_schema().get("secret_fields", ["password"])


def test_password_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    creds = OmeroCredentials(host="omero.example.org", username="alice", password=SECRET)
    for text in (repr(creds), str(creds), creds.model_dump_json(), f"{creds!r}"):
        assert SECRET not in text
    adapter = creds.adapter()
    assert isinstance(adapter, BlitzGatewayAdapter)
    assert SECRET not in repr(adapter)
    clone = pickle.loads(pickle.dumps(adapter))  # crosses processes without a live connection
    assert clone._conn is None and clone.username == "alice"
    fs = OmeroFileSystem(credentials=creds, skip_instance_cache=True)
    assert SECRET not in repr(fs) and SECRET not in str(fs.storage_options.get("credentials"))
    logging.getLogger("test").warning("fs=%r creds=%s", fs, creds)
    assert SECRET not in caplog.text


def test_auth_failure_message_has_no_password(tmp_path: Path) -> None:
    _, plate_id = _standin(tmp_path)
    wrong = "wrong-" + SECRET
    creds = OmeroCredentials(
        username="alice", password=wrong, host=standin_host(str(tmp_path / "omero"))
    )
    with pytest.raises(OmeroAuthError) as info:
        creds.connect()
    assert wrong not in str(info.value) and SECRET not in str(info.value)
    fs = OmeroFileSystem(credentials=creds, skip_instance_cache=True)
    with pytest.raises(OmeroAuthError) as info:
        fs.ls(f"plate_{plate_id}")
    assert wrong not in str(info.value) and wrong not in repr(info.value)


def test_connect_with_standin(tmp_path: Path) -> None:
    _, plate_id = _standin(tmp_path)
    creds = OmeroCredentials(
        username="alice", password=SECRET, host=standin_host(str(tmp_path / "omero"))
    )
    adapter = creds.connect()
    assert isinstance(adapter, StandinAdapter)
    assert adapter.get_plate(plate_id).wells[0].row == 0
    with pytest.raises(ValueError, match="save the OmeroCredentials block first"):
        creds.storage_options()


@pytest.mark.server
def test_saved_block_name_is_all_a_worker_needs(prefect_server: str, tmp_path: Path) -> None:
    """Storage options name the block; another process loads it and connects on its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):  # settings may be cached earlier
        _save_and_use_in_worker(tmp_path)


def _save_and_use_in_worker(tmp_path: Path) -> None:
    _, plate_id = _standin(tmp_path)
    creds = OmeroCredentials(
        username="alice", password=SECRET, host=standin_host(str(tmp_path / "omero"))
    )
    creds.save("test-omero", overwrite=True)
    assert SECRET not in str(OmeroCredentials.load("test-omero"))
    opts = OmeroCredentials.load("test-omero").storage_options()
    assert opts == {"credentials_block": "test-omero"}
    url = f"omero://plate_{plate_id}/outputs/from-worker.txt"
    script = (
        "import sys, fsspec\n"
        "fsspec.register_implementation('omero', "
        "'prefect_hcs.storage.omero_fs.OmeroFileSystem', clobber=True)\n"
        "with fsspec.open(sys.argv[1], 'wb', credentials_block='test-omero') as fh:\n"
        "    fh.write(b'hello')\n"
    )
    subprocess.run([sys.executable, "-c", script, url], check=True, timeout=120)
    fsspec.register_implementation(
        "omero", "prefect_hcs.storage.omero_fs.OmeroFileSystem", clobber=True
    )
    assert fsspec.open(url, "rb", **opts).open().read() == b"hello"


def test_without_the_test_hook_no_login_reaches_a_stand_in(tmp_path: Path) -> None:
    """The product installs no gateway factory: a `standin:` host is just a host name then, and
    the filesystem tries the real server (whose adapter is made, not connected, here)."""
    from prefect_hcs.testing.standin_hook import install_standin, uninstall_standin

    _standin(tmp_path)
    creds = OmeroCredentials(
        username="alice", password=SECRET, host=standin_host(str(tmp_path / "omero"))
    )
    uninstall_standin()
    try:
        assert isinstance(creds.adapter(), BlitzGatewayAdapter)
        fs = OmeroFileSystem(
            **standin_options(tmp_path / "omero", "alice"), skip_instance_cache=True
        )
        assert isinstance(fs.adapter, BlitzGatewayAdapter)
    finally:
        install_standin()
    assert isinstance(creds.adapter(), StandinAdapter)
