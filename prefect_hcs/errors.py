"""Errors a user can fix. The CLI prints their message without a traceback."""

from __future__ import annotations


class UserFacingError(Exception):
    """An input problem: the message says what is wrong, where, and how to fix it."""
