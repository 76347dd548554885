"""Resolution rules of the config layers, table-driven, including the seed document's examples."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from prefect_hcs.config import (
    Backend,
    ConfigError,
    GlobalPipelineConfig,
    PipelineConfig,
    StepMaterializationConfig,
    layer_from_config,
    load_layer,
    resolve,
)
from prefect_hcs.config.resolver import is_static_override


def L(data: dict[str, Any] | None, layer: str = "pipeline"):
    return load_layer(data, layer=layer)  # type: ignore[arg-type]


# (case, global, pipeline, step, dotted path, expected value, expected (layer, class, found-at path))
CASES = [
    (
        "class default when nothing is set",
        None,
        None,
        None,
        "vfs_config.materialization_backend",
        "auto",
        ("default", "VFSConfig", "vfs_config.materialization_backend"),
    ),
    (
        "global beats default",
        {"vfs_config": {"materialization_backend": "omero"}},
        None,
        None,
        "vfs_config.materialization_backend",
        "omero",
        ("global", "VFSConfig", "vfs_config.materialization_backend"),
    ),
    (
        "pipeline beats global",
        {"vfs_config": {"materialization_backend": "omero"}},
        {"vfs_config": {"materialization_backend": "zarr"}},
        None,
        "vfs_config.materialization_backend",
        "zarr",
        ("pipeline", "VFSConfig", "vfs_config.materialization_backend"),
    ),
    (
        "step beats pipeline beats global",
        {"num_workers": 3},
        {"num_workers": 5},
        {"num_workers": 7},
        "num_workers",
        7,
        ("step", "GlobalPipelineConfig", "num_workers"),
    ),
    (
        "seed bug: pipeline leaves vfs_config unset -> global omero survives",
        {"vfs_config": {"materialization_backend": "omero"}},
        {"path_planning_config": {"output_dir_suffix": "_outputs"}, "vfs_config": None},
        None,
        "vfs_config.materialization_backend",
        "omero",
        ("global", "VFSConfig", "vfs_config.materialization_backend"),
    ),
    (
        "an empty pipeline section inherits too",
        {"vfs_config": {"materialization_backend": "omero"}},
        {"vfs_config": {}},
        None,
        "vfs_config.materialization_backend",
        "omero",
        ("global", "VFSConfig", "vfs_config.materialization_backend"),
    ),
    (
        "explicit value equal to the default still overrides",
        {"vfs_config": {"materialization_backend": "omero"}},
        {"vfs_config": {"materialization_backend": "auto"}},
        None,
        "vfs_config.materialization_backend",
        "auto",
        ("pipeline", "VFSConfig", "vfs_config.materialization_backend"),
    ),
    (
        "static override beats inheritance from base classes",
        None,
        {"path_planning_config": {"sub_dir": "images2"}},
        None,
        "step_materialization_config.sub_dir",
        "checkpoints",
        ("default", "StepMaterializationConfig", "step_materialization_config.sub_dir"),
    ),
    (
        "static override: an explicit value on the class itself still wins (user edit kept)",
        {"step_materialization_config": {"sub_dir": "ckpt"}},
        None,
        None,
        "step_materialization_config.sub_dir",
        "ckpt",
        ("global", "StepMaterializationConfig", "step_materialization_config.sub_dir"),
    ),
    (
        "sibling inheritance at the same layer (materialization <- step well filter)",
        None,
        None,
        {"step_well_filter_config": {"well_filter": 4}},
        "step_materialization_config.well_filter",
        4,
        ("step", "StepWellFilterConfig", "step_well_filter_config.well_filter"),
    ),
    (
        "the same layer is exhausted through the MRO before moving up",
        {"step_materialization_config": {"well_filter": 9}},
        {"step_well_filter_config": {"well_filter": 2}},
        None,
        "step_materialization_config.well_filter",
        2,
        ("pipeline", "StepWellFilterConfig", "step_well_filter_config.well_filter"),
    ),
    (
        "own value at a layer beats a base class at the same layer",
        None,
        {
            "step_well_filter_config": {"well_filter": 2},
            "step_materialization_config": {"well_filter": 6},
        },
        None,
        "step_materialization_config.well_filter",
        6,
        ("pipeline", "StepMaterializationConfig", "step_materialization_config.well_filter"),
    ),
    (
        "multiple bases: path planning fields reach the materialization config",
        {"path_planning_config": {"output_dir_suffix": "_outputs"}},
        None,
        None,
        "step_materialization_config.output_dir_suffix",
        "_outputs",
        ("global", "PathPlanningConfig", "path_planning_config.output_dir_suffix"),
    ),
    (
        "deeper base: the pipeline well filter reaches the step well filter",
        None,
        {"well_filter_config": {"well_filter": "row:A"}},
        None,
        "step_well_filter_config.well_filter",
        "row:A",
        ("pipeline", "WellFilterConfig", "well_filter_config.well_filter"),
    ),
    (
        "default of a base-class field is reported against the declaring class",
        None,
        None,
        None,
        "step_materialization_config.output_dir_suffix",
        "_hcs",
        ("default", "PathPlanningConfig", "step_materialization_config.output_dir_suffix"),
    ),
]


@pytest.mark.parametrize(
    ("case", "g", "p", "s", "path", "value", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_resolution_table(case, g, p, s, path, value, source):
    resolved = resolve(
        L(g, "global") if g is not None else None,
        L(p) if p is not None else None,
        L(s, "step") if s is not None else None,
    )
    rv = resolved[path]
    got = rv.value.value if isinstance(rv.value, Backend) else rv.value
    assert got == value, case
    assert (rv.source.layer, rv.source.config_class, rv.source.path) == source, case


def test_seed_verified_example():
    """openhcs.md §1.3: global step filter 3 + suffix; pipeline step filter 2; step filter 4."""
    g = L(
        {
            "step_well_filter_config": {"well_filter": 3},
            "path_planning_config": {"output_dir_suffix": "_outputs"},
        },
        "global",
    )
    p = L({"step_well_filter_config": {"well_filter": 2}})
    step = resolve(g, p, L({"step_well_filter_config": {"well_filter": 4}}, "step"))
    mat = step.config.step_materialization_config
    assert (mat.sub_dir, mat.output_dir_suffix, mat.well_filter, mat.well_filter_mode.value) == (
        "checkpoints",
        "_outputs",
        4,
        "include",
    )
    assert resolve(g, p, L({}, "step")).value("step_well_filter_config.well_filter") == 2


def test_static_override_detection():
    assert is_static_override(StepMaterializationConfig, "sub_dir")
    assert not is_static_override(StepMaterializationConfig, "well_filter")
    assert not is_static_override(StepMaterializationConfig, "output_dir_suffix")


def test_user_edit_survives_switching_contexts():
    """Resolving under other layers and coming back never changes a layer or its result."""
    pipeline = L({"zarr_config": {"compression_level": 3}})  # explicit, equal to default
    g1 = L({"zarr_config": {"compression_level": 9}}, "global")
    g2 = L({"zarr_config": {"compressor": "gzip"}}, "global")
    before = pipeline.model_dump()
    assert resolve(g1, pipeline).value("zarr_config.compression_level") == 3
    assert resolve(g2, pipeline).value("zarr_config.compressor").value == "gzip"
    assert resolve(g1, pipeline).value("zarr_config.compression_level") == 3
    assert pipeline.model_dump() == before
    with pytest.raises(Exception):  # noqa: B017 - layers are immutable (pydantic frozen)
        pipeline.num_workers = 4  # type: ignore[misc]


def test_resolved_config_is_concrete_and_complete():
    cfg = resolve().config
    assert isinstance(cfg, GlobalPipelineConfig)
    assert cfg == GlobalPipelineConfig()
    assert len(resolve().values) == sum(
        len(type(v).model_fields) if hasattr(v, "model_fields") else 1
        for v in (getattr(cfg, f) for f in GlobalPipelineConfig.model_fields)
    )


def test_layer_from_python_config_keeps_only_explicit_values():
    layer = layer_from_config(GlobalPipelineConfig(num_workers=8))
    assert layer.num_workers == 8 and layer.vfs_config is None


def test_thread_safety_of_resolution():
    layers = [
        (L({"num_workers": i}, "global"), L({"zarr_config": {"compression_level": i % 20}}))
        for i in range(1, 40)
    ]
    expected = [resolve(g, p).to_json() for g, p in layers]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [resolve(g, p).to_json() for g, p in layers]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


BAD_LAYERS = [
    ({"vfs_config": {"foo": 1}}, "vfs_config.foo: unknown field", "read_backend"),
    ({"bogus": 1}, "bogus: unknown field", "vfs_config"),
    ({"num_workers": "many"}, "num_workers", "'many'"),
    (
        {"vfs_config": {"materialization_backend": "omero_local"}},
        "vfs_config.materialization_backend: 'omero_local' is not allowed",
        "auto, disk, memory, zarr, omero",
    ),
    ({"well_filter_config": {"well_filter_mode": "only"}}, "well_filter_mode", "include, exclude"),
    ({"zarr_config": {"compression_level": 99}}, "zarr_config.compression_level", "22"),
    ({"vfs_config": 3}, "vfs_config: expected a mapping", "int"),
    ([1, 2], "expected a mapping of config sections", "list"),
    ("just text", "expected a mapping of config sections", "str"),
]


@pytest.mark.parametrize(("data", "must", "hint"), BAD_LAYERS)
def test_bad_layers_have_clear_errors(data, must, hint):
    with pytest.raises(ConfigError) as info:
        load_layer(data, layer="pipeline", origin="assay.yaml")
    msg = str(info.value)
    assert "pipeline config (assay.yaml)" in msg
    assert must in msg and hint in msg


def test_pipeline_config_shape_matches_global():
    assert set(PipelineConfig.model_fields) == set(GlobalPipelineConfig.model_fields)
    assert PipelineConfig().model_dump(exclude_none=True) == {}
