"""Test doubles and synthetic data, kept out of the production path.

`omero_standin` is an OMERO stand-in (with fault injection) that a process reaches only after
`omero_standin.install_standin`. Only tests, ``prefect-hcs make-plate`` and ``prefect-hcs demo``
import this package (``tests/test_layers.py`` enforces it).
"""
