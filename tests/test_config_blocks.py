"""Config layers as Prefect Blocks, through a real Prefect server: save/load, CLI, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from prefect_hcs.config import ConfigError, load_layer, resolve
from prefect_hcs.config.layers import LAZY_SECTIONS
from prefect_hcs.config.sections import SECTIONS

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect-hcs")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=120
    )


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_save_load_keeps_unset_apart_from_explicit_default(prefect_server):
    from prefect_hcs.blocks import HcsPipelineConfig

    layer = load_layer(
        {"vfs_config": {"materialization_backend": "auto"}, "num_workers": 2}, layer="pipeline"
    )
    name = _name()
    HcsPipelineConfig.from_layer(layer).save(name)
    loaded = HcsPipelineConfig.load(name).to_layer()
    assert loaded == layer
    assert loaded.vfs_config.read_backend is None  # unset stays unset
    assert loaded.path_planning_config is None
    g = load_layer(
        {"vfs_config": {"materialization_backend": "omero"}, "num_workers": 9}, layer="global"
    )
    r = resolve(g, loaded)
    assert r.value("vfs_config.materialization_backend").value == "auto"
    assert r.source("vfs_config.materialization_backend").layer == "pipeline"
    assert r.value("num_workers") == 2


def test_missing_block_is_a_clear_error(prefect_server):
    from prefect_hcs.blocks.sources import BlockNotFoundError, load_layer_source

    with pytest.raises(
        BlockNotFoundError, match="no hcs-global-config block named 'does-not-exist'"
    ):
        load_layer_source("does-not-exist", "global")


def test_blocks_apply_and_explain_by_block_name(prefect_server, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    folder = tmp_path / "blocks"
    folder.mkdir()
    (folder / "g.yaml").write_text(
        f"block_type: hcs-global-config\nname: g-{suffix}\nvalues:\n"
        "  vfs_config: {materialization_backend: omero}\n  num_workers: 3\n"
    )
    (folder / "p.yaml").write_text(
        f"block_type: hcs-pipeline-config\nname: p-{suffix}\nvalues:\n"
        "  path_planning_config: {output_dir_suffix: _outputs}\n"
    )
    out = _cli("blocks", "apply", str(folder))
    assert out.returncode == 0, out.stderr
    assert f"hcs-global-config/g-{suffix}" in out.stdout
    out = _cli("config", "explain", "-g", f"g-{suffix}", "-p", f"p-{suffix}", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    mb = data["vfs_config.materialization_backend"]
    assert mb["value"] == "omero" and mb["source"]["layer"] == "global"
    sfx = data["step_materialization_config.output_dir_suffix"]
    assert sfx["value"] == "_outputs"
    assert sfx["source"] == {
        "layer": "pipeline",
        "config_class": "PathPlanningConfig",
        "field": "output_dir_suffix",
        "path": "path_planning_config.output_dir_suffix",
        "static_override": False,
    }
    assert data["step_materialization_config.sub_dir"]["source"]["static_override"] is True


def test_blocks_apply_saves_nothing_when_one_file_is_bad(prefect_server, tmp_path):
    from prefect_hcs.blocks import HcsGlobalConfig

    name = _name()
    folder = tmp_path / "blocks"
    folder.mkdir()
    (folder / "a.yaml").write_text(f"block_type: hcs-global-config\nname: {name}\nvalues: {{}}\n")
    (folder / "b.yaml").write_text(
        "block_type: hcs-pipeline-config\nname: bad\nvalues:\n"
        "  vfs_config: {materialization_backend: omero_local}\n"
    )
    out = _cli("blocks", "apply", str(folder))
    assert out.returncode == 2
    assert (
        "b.yaml" in out.stderr and "omero_local" in out.stderr and "Nothing was saved" in out.stderr
    )
    with pytest.raises(ValueError, match="Unable to find block document"):
        HcsGlobalConfig.load(name)


def test_shipped_example_blocks_are_valid():
    out = _cli("blocks", "apply", str(ROOT / "blocks"), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("valid:") >= 3


@pytest.mark.parametrize(
    ("content", "must"),
    [
        ("- a\n- b\n", "expected a mapping"),
        ("vfs_config: {read_backend: tape}\n", "tape"),
        ("vfs_config: {read_backend: [\n", "not valid YAML"),
    ],
)
def test_explain_bad_yaml_files(tmp_path, content, must):
    f = tmp_path / "layer.yaml"
    f.write_text(content)
    out = _cli("config", "explain", "-p", str(f))
    assert out.returncode == 2
    assert "pipeline config" in out.stderr and must in out.stderr and "layer.yaml" in out.stderr


def test_block_types_register_from_module_and_collection(prefect_server):
    exe = Path(sys.executable).with_name("prefect")
    out = subprocess.run(
        [str(exe), "block", "register", "-m", "prefect_hcs"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "HCS Global Config" in out.stdout and "HCS Pipeline Config" in out.stdout
    from prefect.plugins import load_prefect_collections

    assert "prefect_hcs" in load_prefect_collections()


# ---------------------------------------------------------------- property: save/load/resolve
def _section_values(section: str) -> st.SearchStrategy:
    cls = SECTIONS[section]
    per_field = {}
    for name, info in cls.model_fields.items():
        ann = info.annotation
        if name == "well_filter":
            base = st.one_of(
                st.integers(1, 20),
                st.sampled_from(["row:A", "A01,B02", "all"]),
                st.lists(st.sampled_from(["A01", "B02", "C03"]), min_size=1, max_size=3),
            )
        elif name == "compression_level":
            base = st.integers(0, 22)
        elif name == "chunk_size":
            base = st.integers(16, 8192)
        elif name in ("max_task_runs",):
            base = st.integers(1, 500)
        elif name == "retries":
            base = st.integers(0, 20)
        elif name == "retry_delay_seconds":
            base = st.floats(0, 100, allow_nan=False)
        elif name == "max_plane_pixels":
            base = st.integers(1, 2**30)
        elif name == "max_well_gib":
            base = st.floats(0.5, 100, allow_nan=False)
        elif ann is bool:
            base = st.booleans()
        elif hasattr(ann, "__members__"):
            base = st.sampled_from([m.value for m in ann])
        else:
            base = st.sampled_from(["_a", "_hcs", "images", "checkpoints", "/tmp/out"])
        per_field[name] = st.one_of(st.none(), base)
    return st.one_of(st.none(), st.fixed_dictionaries({}, optional=per_field))


LAYER = st.fixed_dictionaries(
    {},
    optional={
        "num_workers": st.one_of(st.none(), st.integers(1, 64)),
        **{s: _section_values(s) for s in LAZY_SECTIONS},
    },
)

_LOADER = """
import json, sys
from prefect_hcs.blocks import HcsGlobalConfig, HcsPipelineConfig
from prefect_hcs.config import resolve
out = []
for g, p in json.loads(sys.stdin.read()):
    out.append(resolve(HcsGlobalConfig.load(g).to_layer(), HcsPipelineConfig.load(p).to_layer()).to_json())
print(json.dumps(out))
"""


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # each example costs a process; no shrinking
)
@given(st.lists(st.tuples(LAYER, LAYER), min_size=12, max_size=12))
def test_property_save_load_in_new_process_resolves_identically(prefect_server, pairs):
    from prefect_hcs.blocks import HcsGlobalConfig, HcsPipelineConfig

    names, expected = [], []
    for g_data, p_data in pairs:
        g = load_layer(g_data, layer="global")
        p = load_layer(p_data, layer="pipeline")
        gn, pn = _name(), _name()
        HcsGlobalConfig.from_layer(g).save(gn)
        HcsPipelineConfig.from_layer(p).save(pn)
        names.append((gn, pn))
        expected.append(resolve(g, p).to_json())
    out = subprocess.run(
        [sys.executable, "-c", _LOADER],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for (g_data, p_data), want, have in zip(pairs, expected, got, strict=True):
        diff = {k: (want[k], have.get(k)) for k in want if want[k] != have.get(k)}
        assert not diff, f"global={g_data} pipeline={p_data}: {diff}"


def test_invalid_layer_never_reaches_a_block():
    with pytest.raises(ConfigError):
        load_layer({"num_workers": 0}, layer="global")


def test_block_schema_is_built_once_and_equals_prefects():
    """The cached schema (Prefect asks for it per field on every save) is Prefect's own, with
    the block's slug and description, and a caller changing its copy changes nothing."""
    from prefect.blocks.core import Block

    from prefect_hcs.blocks import HcsGlobalConfig, HcsPipelineConfig

    for cls in (HcsGlobalConfig, HcsPipelineConfig):
        schema = cls.model_json_schema()
        assert schema == Block.model_json_schema.__func__(cls)
        assert schema["block_type_slug"] == cls._block_type_slug
        assert schema["description"] == cls._description
        schema["properties"].clear()
        assert cls.model_json_schema()["properties"], "the cache was changed through a copy"
