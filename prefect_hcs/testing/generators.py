"""One entry point for every synthetic plate generator, by the name the CLI uses.

``imagexpress`` and ``phenix`` (Harmony V6, uncompressed) are the original generators of
`synthetic`; ``phenix``/``operetta`` with a ``variant`` (``v5``: ``Index.idx.xml``, ``v7``:
``Index.xml``) write Harmony exports with LZW TIFFs (`synthetic_harmony`); ``cellvoyager`` writes a
CV8000 measurement folder (`synthetic_cellvoyager`).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect_hcs.formats.layout import PlateError

GENERATED_FORMATS = ("imagexpress", "phenix", "operetta", "cellvoyager")
VARIANTS = ("v5", "v7")


def make_any_plate(
    out_dir: str, *, format: str, variant: str | None = None, **options: Any
) -> dict[str, Any]:
    """Write a synthetic plate of `format` (and Harmony `variant`) to `out_dir`; its ground truth.

    Raises:
        PlateError: an unknown format or variant (one line naming the choices).
    """
    if format not in GENERATED_FORMATS:
        raise PlateError(
            f"unknown plate format {format!r} for make-plate: use one of "
            f"{', '.join(GENERATED_FORMATS)}"
        )
    if variant is not None and (variant not in VARIANTS or format not in ("phenix", "operetta")):
        raise PlateError(
            f"--variant {variant!r} is not valid for {format}: Harmony plates (phenix, operetta) "
            f"take one of {', '.join(VARIANTS)}; imagexpress takes acquisition or export "
            "(make_imagexpress_plate); cellvoyager takes none"
        )
    if format == "cellvoyager":
        from prefect_hcs.testing.synthetic_cellvoyager import make_cellvoyager_plate

        return make_cellvoyager_plate(out_dir, **options)
    if format == "operetta" or variant is not None:
        from prefect_hcs.testing.synthetic_harmony import make_harmony_plate

        instrument = "Operetta CLS" if format == "operetta" else "Phenix"
        harmony: Literal["v5", "v7"] = "v7" if variant == "v7" else "v5"  # checked above
        return make_harmony_plate(out_dir, variant=harmony, instrument=instrument, **options)
    from prefect_hcs.testing.synthetic import make_plate

    return make_plate(out_dir, format="phenix" if format == "phenix" else "imagexpress", **options)
