"""Object-store options, stamps and credentials, without a server (the S3 runs are in
test_object_store.py)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from prefect_hcs.blocks.storage_credentials import s3fs_credentials
from prefect_hcs.runtime.stores import fsspec_options
from prefect_hcs.storage.object_store import (
    StoreAccessError,
    check_store,
    file_stamp,
    inherit_output_options,
    merge_options,
)


def test_explicit_options_win_over_the_block_and_region_goes_to_client_kwargs():
    creds = {"key": "K", "secret": "S", "endpoint_url": "http://block:9000",
             "client_kwargs": {"region_name": "eu-west-1"}}  # fmt: skip
    out = merge_options(creds, {"endpoint_url": "http://option:9000", "region": "us-east-2"})
    assert out["endpoint_url"] == "http://option:9000"
    assert out["client_kwargs"] == {"region_name": "us-east-2"}
    assert (out["key"], out["secret"]) == ("K", "S")
    assert out["use_listings_cache"] is False  # a long-lived worker must see re-uploads
    assert merge_options({}, {"use_listings_cache": True})["use_listings_cache"] is True


def test_stamp_is_version_then_etag_never_mtime_on_object_stores():
    s3_info = {"ETag": '"abc"', "LastModified": "2026-01-01", "size": 3}
    assert file_stamp(s3_info) == '"abc"'
    assert file_stamp({**s3_info, "VersionId": "v7"}) == "v7"
    assert file_stamp({**s3_info, "VersionId": "null"}) == '"abc"'  # unversioned bucket
    assert file_stamp({"mtime": 1700000000.5, "size": 3}) == "1700000000.5"


def test_outputs_inherit_the_plate_options_only_on_the_same_kind_of_store():
    opts = {"credentials_block": "raw-store"}
    assert inherit_output_options("s3://raw/P1", "s3://out/P1_hcs", opts) == opts
    assert inherit_output_options("s3://raw/P1", "/data/out/P1_hcs", opts) == {}
    omero = {"credentials_block": "my-omero"}
    assert inherit_output_options("omero://plate_3", "s3://out/x", omero) == {}


def test_local_and_memory_urls_take_no_options_and_omero_keeps_its_block_name():
    assert fsspec_options("/data/P1", {"credentials_block": "x"}) == {}
    assert fsspec_options("memory://a/b", {"anon": True}) == {}
    assert fsspec_options("omero://plate_1", {"credentials_block": "o"}) == {
        "credentials_block": "o"
    }
    s3 = fsspec_options("s3://b/P1", {"endpoint_url": "http://e:9000", "anon": False})
    assert s3["endpoint_url"] == "http://e:9000" and "credentials_block" not in s3


def test_minio_and_aws_blocks_become_s3fs_options():
    from prefect_aws import AwsCredentials, MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    minio = MinIOCredentials(
        minio_root_user="u",
        minio_root_password=SecretStr("p"),
        region_name="eu-1",
        aws_client_parameters=AwsClientParameters(endpoint_url="http://m:9000", use_ssl=False),
    )
    assert s3fs_credentials(minio) == {
        "key": "u", "secret": "p", "endpoint_url": "http://m:9000", "use_ssl": False,
        "client_kwargs": {"region_name": "eu-1"},
    }  # fmt: skip
    aws = AwsCredentials(aws_access_key_id="AK", aws_secret_access_key="SK", aws_session_token="T")
    out = s3fs_credentials(aws)
    assert (out["key"], out["secret"], out["token"]) == ("AK", "SK", "T")


def test_probe_of_a_closed_port_is_one_line_without_the_secret():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the probe runs: nothing listens
    opts = {"key": "AK", "secret": "very-secret-value", "endpoint_url": f"http://127.0.0.1:{port}"}
    with pytest.raises(StoreAccessError) as info:
        check_store("s3://bucket/P1", opts, "plate", None)
    msg = str(info.value)
    assert "s3://bucket/P1" in msg and f"127.0.0.1:{port}" in msg and "endpoint_url" in msg
    assert "very-secret-value" not in msg and "\n" not in msg
    assert info.value.__cause__ is None  # no botocore chain in a traceback
