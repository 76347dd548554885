"""Object-store credentials from Prefect Blocks: prefect-aws's `AwsCredentials` / `MinIOCredentials`.

Storage options name a block (``{"credentials_block": "raw-store", "endpoint_url": …}``); the
secret stays in the block (a SecretStr, encrypted by the Prefect server) and is loaded by each
process that opens the store, at run time. Plans, flow-run parameters, logs and artifacts only
ever see the block's name. We reuse prefect-aws's blocks rather than defining our own: facilities
that already keep AWS or MinIO credentials in Prefect use them as they are, and the UI has forms
for them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prefect_hcs.errors import UserFacingError

#: Block type slugs tried, in order, for a bare block name.
CREDENTIAL_SLUGS = ("aws-credentials", "minio-credentials")
#: Loaded credentials are reused this long per process (a block load is a server round trip;
#: assumed-role credentials expire, so they are not kept for the life of a served process).
CACHE_SECONDS = 300.0

_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}
_LOCK = threading.Lock()


class CredentialsBlockError(UserFacingError, LookupError):
    """A credentials block named in storage options is missing, ambiguous or unusable."""


def _prefect_aws() -> Any:
    try:
        import prefect_aws
    except ImportError:
        raise CredentialsBlockError(
            "storage options name a credentials_block, which needs prefect-aws: "
            "`pip install 'prefect-hcs[s3]'` on every machine that runs plates"
        ) from None
    return prefect_aws


def load_credentials_block(ref: str) -> Any:
    """The `AwsCredentials` or `MinIOCredentials` block `ref` names.

    `ref` is ``"<slug>/<name>"`` (``aws-credentials/raw-store``) or a bare name, looked up as
    each type in `CREDENTIAL_SLUGS`; a bare name saved as both types is refused as ambiguous.
    """
    aws = _prefect_aws()
    classes = {"aws-credentials": aws.AwsCredentials, "minio-credentials": aws.MinIOCredentials}
    slug, _, name = ref.rpartition("/")
    if slug and slug not in classes:
        raise CredentialsBlockError(
            f"credentials_block {ref!r}: block type {slug!r} is not an object-store credentials "
            f"type; use one of {', '.join(CREDENTIAL_SLUGS)} (or a bare block name)"
        )
    found = [b for s in ([slug] if slug else CREDENTIAL_SLUGS) if (b := _load(classes[s], name))]
    if len(found) > 1:
        raise CredentialsBlockError(
            f"credentials_block {name!r} exists as both aws-credentials and minio-credentials; "
            f"write 'aws-credentials/{name}' or 'minio-credentials/{name}'"
        )
    if not found:
        raise CredentialsBlockError(
            f"credentials_block {ref!r}: no {' or '.join([slug] if slug else CREDENTIAL_SLUGS)} "
            "block of that name on the Prefect server. Create it in the UI (Blocks) or with "
            "`AwsCredentials(...).save(name)`, or list them with `prefect block ls`"
        )
    return found[0]


def _load(cls: Any, name: str) -> Any | None:
    try:
        return cls.load(name, _sync=True)
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return None
        raise


def s3fs_credentials(block: Any) -> dict[str, Any]:
    """s3fs options (key, secret, token, endpoint_url, client_kwargs) from a credentials block.

    AWS blocks go through their own boto3 session, so profiles and assumed roles work too; an
    AWS block with no keys yields none and s3fs falls back to the default credential chain.
    """
    params = block.aws_client_parameters
    out: dict[str, Any] = {}
    if hasattr(block, "minio_root_user"):
        out["key"] = block.minio_root_user
        out["secret"] = block.minio_root_password.get_secret_value()
    else:
        frozen = block.get_boto3_session().get_credentials()
        if frozen is not None:
            frozen = frozen.get_frozen_credentials()
            out.update(key=frozen.access_key, secret=frozen.secret_key)
            if frozen.token:
                out["token"] = frozen.token
    client: dict[str, Any] = {}
    if block.region_name:
        client["region_name"] = block.region_name
    if params.endpoint_url:
        out["endpoint_url"] = params.endpoint_url
    if not params.use_ssl:
        out["use_ssl"] = False
    if params.verify is not None and params.verify is not True:
        client["verify"] = str(params.verify) if params.verify else False
    if params.config:
        out["config_kwargs"] = dict(params.config)
    if client:
        out["client_kwargs"] = client
    return out


def credentials_options(ref: str) -> dict[str, Any]:
    """`s3fs_credentials` of the block `ref` names, cached per process for `CACHE_SECONDS`."""
    now = time.monotonic()
    with _LOCK:
        hit = _CACHE.get(ref)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return dict(hit[1])
    options = s3fs_credentials(load_credentials_block(ref))
    with _LOCK:
        _CACHE[ref] = (now, options)
    return dict(options)


def forget_cached_credentials() -> None:
    """Drop cached credentials (after a block was edited, e.g. keys rotated)."""
    with _LOCK:
        _CACHE.clear()
