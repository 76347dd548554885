"""prefect-hcs: high-content-screening pipelines over multi-well plates as Prefect 3 flows.

Block classes are exposed lazily so that `import prefect_hcs.config` stays free of Prefect, while
`prefect block register -m prefect_hcs` (which lists this module's members) still finds them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_BLOCKS = ("HcsGlobalConfig", "HcsPipelineConfig", "OmeroCredentials")


def __getattr__(name: str) -> Any:
    if name in _BLOCKS:
        from prefect_hcs import blocks

        return getattr(blocks, name)
    raise AttributeError(f"module 'prefect_hcs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_BLOCKS])
