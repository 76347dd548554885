"""Storage: fsspec helpers and the ``omero`` filesystem with its gateway adapter.

Submodules are imported on demand (``prefect_hcs.storage.omero_fs`` is loaded by fsspec through
the ``fsspec.specs`` entry point), so importing this package stays cheap.
"""
