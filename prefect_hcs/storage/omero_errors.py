"""Adapter-level OMERO errors, shared by the real gateway adapter and the stand-in.

Each also derives from the matching builtin so that fsspec, zarr and plain ``except`` clauses treat
them naturally (a missing plate is a FileNotFoundError, a dropped connection a ConnectionError).
Messages name the object and the user, never the password.
"""

from __future__ import annotations

from prefect_hcs.errors import UserFacingError


class OmeroError(Exception):
    """Any OMERO failure that retrying will not fix."""


# The next three are also UserFacingError: a wrong plate id, group, user or password is fixed by
# the user, and the CLI prints the message (which names the object and user) without a traceback.
class OmeroNotFound(OmeroError, UserFacingError, FileNotFoundError):
    """The object does not exist (or, on a real server, is not visible to this user)."""


class OmeroPermissionDenied(OmeroError, UserFacingError, PermissionError):
    """The object exists but belongs to a group the user is not a member of."""


class OmeroAuthError(OmeroError, UserFacingError, PermissionError):
    """Login failed: wrong user name or password, or not a member of the requested group."""


class OmeroConnectionError(OmeroError, ConnectionError):
    """Transient: the server could not be reached or the session dropped. Safe to retry."""
