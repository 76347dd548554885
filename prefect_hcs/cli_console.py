"""What the console shows when something goes wrong: one line per user mistake, tracebacks for bugs.

A `UserFacingError` (bad plate, pipeline, config, parameter…) is the user's to fix: the CLI prints
``error: <message>`` and exits 2, without a traceback. When such an error is raised inside a flow
run, Prefect's engine logs it (with its traceback) from the task and the flow; those records are
kept out of the console by `UserErrorConsoleFilter` but still reach the run's logs in the Prefect
UI (the API log handler is not filtered). `--debug` (or ``PREFECT_HCS_DEBUG=1``) shows everything.
Any other exception is a bug and keeps its traceback everywhere.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import typer

from prefect_hcs.errors import UserFacingError

_STATE = {"debug": os.environ.get("PREFECT_HCS_DEBUG", "") not in ("", "0", "false")}


def debug_enabled() -> bool:
    """True when `--debug` or PREFECT_HCS_DEBUG asked for full tracebacks."""
    return _STATE["debug"]


def set_debug(value: bool) -> None:
    """Turn full tracebacks for user errors on or off (the `--debug` option)."""
    _STATE["debug"] = _STATE["debug"] or value


def user_error(exc: BaseException | None) -> UserFacingError | None:
    """The `UserFacingError` in `exc`'s cause/context chain, if there is one."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, UserFacingError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _user_error_names() -> set[str]:
    names, todo = set(), [UserFacingError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class UserErrorConsoleFilter(logging.Filter):
    """Drop engine records about a user error from a console handler (the UI keeps them).

    Dropped: records carrying a `UserFacingError` (anywhere in the exception chain), and the
    engine's "Finished in state Failed(... <UserError>: ...)" summaries of such failures.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for records the console should not show."""
        if debug_enabled():
            return True
        if record.exc_info and user_error(record.exc_info[1]) is not None:
            return False
        if record.levelno >= logging.ERROR and record.name.startswith("prefect"):
            message = record.getMessage()
            if "Finished in state" in message or "exception" in message:
                return not any(
                    f"{n}:" in message or f"{n}(" in message for n in _user_error_names()
                )
        return True


def quiet_user_errors_on_console() -> None:
    """Attach `UserErrorConsoleFilter` to every console handler Prefect configured."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect configures its handlers lazily

    loggers: list[Any] = [logging.getLogger()]
    loggers += [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _is_console(handler) and not any(
                isinstance(f, UserErrorConsoleFilter) for f in handler.filters
            ):
                handler.addFilter(UserErrorConsoleFilter())


def _is_console(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return (
        isinstance(handler, logging.StreamHandler)
        and stream in (sys.stderr, sys.stdout)
        or (type(handler).__name__ == "PrefectConsoleHandler")
    )


def print_user_error(exc: UserFacingError) -> None:
    """``error: <message>`` on stderr (with the traceback under --debug)."""
    if debug_enabled():
        traceback.print_exception(exc)
    typer.echo(f"error: {exc}", err=True)


class HcsTyper(typer.Typer):
    """The CLI app: a `UserFacingError` escaping any command is one `error:` line and exit 2."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the CLI; user errors end as `error: …` (exit 2), anything else raises."""
        try:
            return super().__call__(*args, **kwargs)
        except UserFacingError as exc:
            print_user_error(exc)
            sys.exit(2)
