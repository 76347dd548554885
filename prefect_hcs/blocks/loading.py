"""Load a saved block synchronously from anywhere, typed as the block class.

`Block.load` is wrapped by Prefect's ``async_dispatch``: inside a running event loop (a flow run,
the Dask scheduler's thread) a plain call returns a coroutine. ``_sync=True`` forces the blocking
load in every context, but the wrapped signature does not declare it, so type checkers see
neither the keyword nor the block type. This is the one place that call is made.
"""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.blocks.core import Block

__all__ = ["load_block"]

B = TypeVar("B", bound=Block)


def load_block(cls: type[B], name: str) -> B:
    """The block of type ``cls`` saved as ``name`` on the Prefect server.

    Raises:
        ValueError: no such block document (Prefect's "Unable to find block document" message).
    """
    # call-arg: `_sync` is consumed by async_dispatch's wrapper, not by Block.load's signature
    loaded = cls.load(name, _sync=True)  # type: ignore[call-arg]
    return cast(B, loaded)
