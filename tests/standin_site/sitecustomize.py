"""Started by every Python process the tests launch (conftest puts this folder on PYTHONPATH).

It installs the OMERO stand-in hook, so a ``standin:<folder>`` login in storage options or a saved
credentials block reaches the stand-in in served deployments, workers and CLI subprocesses too —
exactly as in the test process itself. The product never does this: see
`prefect_hcs.testing.standin_hook.install_standin`.
"""

try:
    from prefect_hcs.testing.standin_hook import install_standin
except ImportError:  # a process of another environment (e.g. a system tool) on the same PATH
    pass
else:
    install_standin()
