"""Object stores (S3 and S3-compatible: MinIO, Ceph RGW, …) through s3fs. No Prefect here.

Three jobs, each small:

- `merge_options`: the options s3fs gets = the user's non-secret storage options (endpoint_url,
  region, …) over what a credentials block provides (keys, token, endpoint).
- `file_stamp`: what identifies one version of a file for resume — the object's version id or
  ETag on object stores (their "modified" time is upload time, not content), mtime elsewhere.
- `check_store`: one cheap request (list at most one key under the path) made before a run
  starts, turning a missing bucket, a wrong endpoint or refused credentials into one
  `StoreAccessError` line that names the URL and the fix, never a botocore traceback or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_hcs.errors import UserFacingError

#: URL schemes served by s3fs (an S3 API).
S3_SCHEMES = ("s3", "s3a")
#: Option keys the user may give for S3 that s3fs takes inside ``client_kwargs``.
_CLIENT_KEYS = ("region_name", "verify")
#: The probe fails fast: a wrong endpoint must not take minutes of botocore retries to report.
_PROBE_CONFIG = {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2}}


class StoreAccessError(UserFacingError, OSError):
    """An object store cannot be reached or used as configured (bucket, endpoint, credentials)."""


def scheme_of(url: str) -> str:
    """The URL's scheme ('' for a plain local path)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_object_store(url: str) -> bool:
    """True for URLs s3fs serves (``s3://bucket/key``)."""
    return scheme_of(url) in S3_SCHEMES


def merge_options(credentials: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """s3fs options: the block's credentials and endpoint, overridden by explicit options.

    ``region`` / ``region_name`` and ``verify`` given at top level are moved into
    ``client_kwargs`` where s3fs expects them, so plain JSON such as
    ``{"endpoint_url": "http://minio:9000", "region": "eu-west-1"}`` works. Listings are not
    cached unless the options say so (``use_listings_cache``).
    """
    out = {k: v for k, v in credentials.items() if k != "client_kwargs"}
    client = dict(credentials.get("client_kwargs") or {})
    for key, value in options.items():
        if key == "client_kwargs":
            client.update(value or {})
        elif key in ("region", *_CLIENT_KEYS):
            client["region_name" if key == "region" else key] = value
        else:
            out[key] = value
    if client:
        out["client_kwargs"] = client
    # A served or Dask worker process lives for days; with s3fs's listing cache it would keep
    # seeing a plate as it was when first listed (stale ETags: a re-uploaded plane not rerun).
    out.setdefault("use_listings_cache", False)
    return out


def inherit_output_options(
    plate_url: str, output_root: str, plate_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Output options when none are given: the plate's if the output is on the same kind of
    store (same scheme), else none: an OMERO block means nothing to S3, and vice versa."""
    same = scheme_of(plate_url) == scheme_of(output_root)
    return dict(plate_options or {}) if same else {}


def file_stamp(info: Mapping[str, Any]) -> str:
    """What changes when a file is replaced: version id or ETag on object stores, else mtime.

    `info` is an fsspec ``info()`` or listing entry. Object stores give ETags (content hashes
    for single-part uploads) and, on versioned buckets, a version id; local files give mtime.
    """
    for key in ("VersionId", "version_id", "ETag", "etag", "mtime", "LastModified", "created"):
        value = info.get(key)
        if value not in (None, "", "null"):
            return str(value)
    return ""


def _bucket_and_key(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1] if "://" in url else url
    bucket, _, key = rest.strip("/").partition("/")
    return bucket, key


def check_store(url: str, options: Mapping[str, Any], role: str, block: str | None) -> None:
    """Raise `StoreAccessError` unless `url`'s bucket answers a list request with `options`.

    `role` ("plate" or "output") and `block` (the credentials block's name, or None) only shape
    the message. Secrets in `options` are never part of it.
    """
    if not is_object_store(url):
        return
    import fsspec

    bucket, key = _bucket_and_key(url)
    opts = dict(options)
    opts["config_kwargs"] = {**_PROBE_CONFIG, **dict(opts.get("config_kwargs") or {})}
    opts["skip_instance_cache"] = True
    try:
        fs = fsspec.filesystem(scheme_of(url), **opts)
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        raise StoreAccessError(_explain(exc, url, role, options, block)) from None


def _chain_text(exc: BaseException) -> str:
    """Type names, messages and S3 error codes of an exception and its causes (s3fs wraps
    botocore's ClientError, whose code says *which* refusal it was)."""
    parts, seen = [], 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        code = getattr(cur, "response", {}).get("Error", {}).get("Code", "")
        parts.append(f"{type(cur).__name__}: {code} {cur}")
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return " | ".join(parts)


def _explain(
    exc: BaseException, url: str, role: str, options: Mapping[str, Any], block: str | None
) -> str:
    """One line: what failed for which URL, and what to change."""
    bucket, _ = _bucket_and_key(url)
    endpoint = options.get("endpoint_url") or "the default AWS endpoint"
    creds = f"credentials block {block!r}" if block else "the default AWS credential chain"
    which = "storage_options" if role == "plate" else "output_storage_options"
    text = _chain_text(exc)
    head = f"cannot use the {role} location {url}"
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return (
            f"{head}: bucket {bucket!r} does not exist at {endpoint}. Create it, or fix the "
            f"bucket name (or the endpoint_url in {which} / the credentials block)"
        )
    if any(s in text for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken")):
        return (
            f"{head}: {endpoint} refused the access key or secret of {creds}. Fix the keys in "
            "that block (prefect-hcs never takes keys as options)"
        )
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return (
            f"{head}: bucket {bucket!r} does not exist or is denied to {creds} at {endpoint}. "
            "Check the bucket name, or grant "
            f"s3:ListBucket/GetObject{'/PutObject/DeleteObject' if role == 'output' else ''} "
            "on it, or name another credentials block"
        )
    if "ParamValidation" in text or "Invalid bucket name" in text:
        return f"{head}: {bucket!r} is not a valid bucket name. Fix the URL"
    if any(s in text for s in ("EndpointConnection", "Connect", "Invalid endpoint", "Timeout")):
        return (
            f"{head}: cannot connect to the S3 endpoint {endpoint}. Check endpoint_url in "
            f"{which} or in {creds} (scheme, host and port of your MinIO/Ceph/S3 service)"
        )
    return f"{head}: {type(exc).__name__} from {endpoint}. Check {which} and {creds}"
