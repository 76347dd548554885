"""Test doubles and synthetic data, kept out of the production path.

`omero_standin` is an OMERO stand-in (with fault injection) that a process reaches only after
`omero_standin.install_standin`; `omero_demo` prepares the ``demo --omero`` run. `synthetic`
(ImageXpress/Phenix scenes with ground truth), `synthetic_imagexpress`, `synthetic_harmony`,
`synthetic_cellvoyager` and `synthetic_tiles` write realistic plates of every vendor;
`generators.make_any_plate` picks one, `plate_target` guards the folder ``make-plate`` writes to. Only tests, ``prefect-hcs make-plate`` and ``prefect-hcs demo``
import this package (``tests/test_layers.py`` enforces it).
"""
