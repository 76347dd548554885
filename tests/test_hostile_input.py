"""Hostile and mistaken input caught at compile time or before a run exists, and the console.

Each test is a row of the "Hostile and mistaken input" table in docs/bad-input.md (the last test
checks the table and this file agree). CLI cases run the real `prefect-hcs` as a subprocess
against the session's real Prefect server; the secrets test searches that server's SQLite files.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import tifffile

from prefect_hcs.errors import UserFacingError
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.testing.synthetic import make_plate

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("prefect-hcs"))


def _plate(folder: Path, name: str = "P", **kw) -> Path:
    plate = folder / name
    args = dict(format="imagexpress", wells=["A01", "A02"], sites=4, channels=2, z=1, size=64)
    make_plate(str(plate), seed=1, **{**args, **kw})
    return plate


def _compile_error(*args, **kwargs) -> str:
    with pytest.raises(UserFacingError) as info:
        compile_from_parameters(*args, **kwargs)
    return str(info.value)


def _lie(path: Path, claimed: int = 100_000) -> None:
    """Rewrite a TIFF's ImageWidth/ImageLength tags to claim a claimed×claimed plane."""
    with tifffile.TiffFile(path) as tif:
        order = tif.byteorder
        offsets = [tif.pages.first.tags[t].offset for t in ("ImageWidth", "ImageLength")]
    data = bytearray(path.read_bytes())
    for off in offsets:
        code = struct.unpack_from(order + "H", data, off)[0]
        struct.pack_into(order + "HHII", data, off, code, 4, 1, claimed)  # LONG, 1 value
    path.write_bytes(bytes(data))


def _pipeline(steps: list[dict]) -> dict:
    return {"name": "p", "steps": steps}


def _deep_yaml(levels: int = 3000) -> str:
    return "name: deep\nsteps: " + "[" * levels + "]" * levels + "\n"


# ------------------------------------------------------------------------- write side (Build 1)
@pytest.mark.parametrize("name", ["../../escape", "seg.v2", "a/b", "my step", "1st"])
def test_step_name_must_be_an_identifier(tmp_path, name):
    plate = _plate(tmp_path)
    message = _compile_error(str(plate), _pipeline([{"name": name, "func": "max_projection"}]))
    assert f"step name {name!r} is not a valid name" in message
    assert "a letter first, then letters, digits, '_' or '-'" in message
    assert not (tmp_path / "escape").exists() and not (tmp_path / "P_hcs").exists()


def test_checkpoint_sub_dir_cannot_leave_the_output(tmp_path):
    plate = _plate(tmp_path)
    config = {"step_materialization_config": {"enabled": True, "sub_dir": "../../../outside"}}
    steps = [{"name": "project", "func": "max_projection", "config": config}]
    message = _compile_error(str(plate), _pipeline(steps))
    assert re.search(r"step 0 'project': step_materialization_config\.sub_dir = '\.\./", message)
    assert "would write outside its folder" in message


def test_output_suffix_cannot_leave_the_output(tmp_path):
    plate = _plate(tmp_path)
    cfg = tmp_path / "g.yaml"
    cfg.write_text("path_planning_config:\n  output_dir_suffix: /../../x\n")
    message = _compile_error(str(plate), "demo", str(cfg))
    assert "path_planning_config.output_dir_suffix = '/../../x'" in message


def test_output_folder_that_is_a_file_is_refused_at_plan(tmp_path):
    plate = _plate(tmp_path)
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"path_planning_config:\n  global_output_folder: {blocker}\n")
    message = _compile_error(str(plate), "demo", str(cfg))
    assert f"{blocker} is a file, not a folder" in message
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------- sizes (Build 3)
@pytest.mark.parametrize(
    ("fmt", "first_plane"), [("imagexpress", "*_A01_s1_w1*.tif"), ("phenix", "r01c01f01p01-ch1*")]
)
def test_lying_header_in_the_sample_is_a_compile_error_naming_the_file(tmp_path, fmt, first_plane):
    plate = _plate(tmp_path, format=fmt)
    victim = sorted(plate.rglob(first_plane))[0]  # the plane the handler reads first
    _lie(victim)
    message = _compile_error(str(plate))
    assert victim.name in message and re.search(r"100000[×x]100000", message), message
    assert re.search(r"64[×x]64 uint16", message), message


def test_lying_header_outside_the_sample_fails_its_well_before_allocation(tmp_path, prefect_server):
    from prefect_hcs.formats.detect import open_plate
    from prefect_hcs.formats.geometry import sample_refs
    from prefect_hcs.runtime.flow import process_plate

    plate = _plate(tmp_path, wells=["A01", "A02", "A03"], z=2)  # 48 planes, 16 sampled
    layout = open_plate(str(plate))
    sampled = {r.path for r in sample_refs(layout.images)}
    victim = next(r for r in layout.images if r.well == "A02" and r.path not in sampled)
    _lie(Path(victim.path))
    compile_from_parameters(str(plate))  # the sample misses it: plan passes
    state = process_plate(plate=str(plate), return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "1 well(s) failed" in message and "A02" in message
    assert re.search(r"TIFF header of .* claims a 100000×100000 plane.*refused before", message)


def test_plane_ceiling_is_a_config_field_with_provenance(tmp_path):
    plate = _plate(tmp_path)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("limits_config:\n  max_plane_pixels: 1000\n")
    message = _compile_error(str(plate), "demo", None, str(cfg))
    assert "64×64 = 4,096 pixels, above limits_config.max_plane_pixels = 1,000" in message
    assert "pipeline layer" in message


def test_well_ceiling_counts_every_plane_of_a_well(tmp_path):
    plate = _plate(tmp_path)
    cfg = tmp_path / "global.yaml"
    cfg.write_text("limits_config:\n  max_well_gib: 0.00001\n")
    message = _compile_error(str(plate), "demo", str(cfg))
    assert "above limits_config.max_well_gib = 1e-05" in message
    assert "1 timepoint × 2 channels × 1 z × 4 sites planes of 64×64 uint16" in message


# ---------------------------------------------------------------------- documents (misc rows)
def test_deeply_nested_pipeline_document_is_one_line(tmp_path):
    plate = _plate(tmp_path)
    doc = tmp_path / "deep.yaml"
    doc.write_text(_deep_yaml())
    message = _compile_error(str(plate), str(doc))
    assert "is nested more than 50 levels deep" in message
    json_doc = tmp_path / "deep.json"
    json_doc.write_text('{"name": "x", "steps": ' + "[" * 5000 + "]" * 5000 + "}")
    assert "nested more than 50 levels" in _compile_error(str(plate), str(json_doc))


def test_huge_pipeline_file_is_refused_before_reading(tmp_path):
    plate = _plate(tmp_path)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as fh:
        fh.truncate(50 * 2**20)  # 50 MB (sparse: refused by its size, never read)
    message = _compile_error(str(plate), str(huge))
    assert "is 52,428,800 bytes; documents of more than 1,048,576 bytes are refused" in message


def test_yaml_alias_bomb_is_refused(tmp_path):
    plate = _plate(tmp_path)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    doc = tmp_path / "bomb.yaml"
    doc.write_text("\n".join(lines) + "\nname: bomb\nsteps: [{func: max_projection}]\n")
    message = _compile_error(str(plate), str(doc))
    assert "expands to more than 100,000 values (YAML aliases)" in message


def test_deep_config_layer_file_is_one_line(tmp_path):
    cfg = tmp_path / "global.yaml"
    cfg.write_text("vfs_config: " + "[" * 3000 + "]" * 3000 + "\n")
    message = _compile_error(str(_plate(tmp_path)), "demo", str(cfg))
    assert "nested more than 50 levels deep" in message


# ---------------------------------------------------------------------------------- misc rows
def test_omero_memory_checkpoints_are_a_compile_error():
    from helpers import make_layout

    from prefect_hcs.pipeline.compiler import CompileError, compile_plate
    from prefect_hcs.pipeline.model import load_pipeline

    config = {
        "vfs_config": {"materialization_backend": "memory"},
        "step_materialization_config": {"enabled": True},
    }
    pipeline = load_pipeline(
        _pipeline([{"name": "project", "func": "max_projection", "config": config}])
    )
    with pytest.raises(CompileError) as info:
        compile_plate(make_layout(2, fmt="omero"), pipeline)
    assert "step 0 'project': vfs_config.materialization_backend is 'memory'" in str(info.value)
    assert "OMERO plate has no global_output_folder" in str(info.value)


def test_step_well_filter_that_skips_stitching_is_a_compile_error(tmp_path):
    plate = _plate(tmp_path, wells=["A01", "A02", "A03"])
    steps = [
        {"name": "project", "func": "max_projection"},
        {
            "name": "stitch",
            "func": "stitch_tiles",
            "config": {"step_well_filter_config": {"well_filter": "A01"}},
        },
        {
            "name": "count",
            "func": "count_nuclei",
            "group_by": "channel",
            "variable_components": ["site"],
        },
    ]
    message = _compile_error(str(plate), _pipeline(steps))
    assert re.search(
        r"step 1 'stitch': changes each well's fields \(fields 4, .*→ fields 1, .*skips 2 "
        r"well\(s\) \(A02, A03\)",
        message,
    )


def test_make_plate_refuses_an_existing_folder_and_keeps_it(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        out = _cli(["make-plate", str(target), "--size", "64", "--z", "1", *extra])
        _assert_one_line(out, r"not a plate make-plate wrote|not empty")
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_make_plate_overwrite_replaces_only_its_own_plate(tmp_path):
    plate = _plate(tmp_path, wells=["A01", "A02", "B01"])
    before = sorted(p.name for p in plate.rglob("*.tif"))
    out = _cli(["make-plate", str(plate), "--wells", "A01", "--size", "64", "--z", "1"])
    _assert_one_line(out, r"is not empty .*--overwrite")
    bad = _cli(["make-plate", str(plate), "--overwrite", "--format", "no-such-format"])
    _assert_one_line(bad, r"no-such-format")
    assert sorted(p.name for p in plate.rglob("*.tif")) == before  # a failed write lost nothing
    ok = _cli(
        ["make-plate", str(plate), "--overwrite", "--wells", "A01", "--size", "64", "--z", "1"]
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads((plate / "ground_truth.json").read_text())["wells"].keys() == {"A01"}
    assert not any("_A02_" in p.name for p in plate.rglob("*.tif"))


# ---------------------------------------------------------------------------- secrets (Build 2)
def _server_db_bytes() -> bytes:
    import conftest

    files = sorted((conftest._SESSION_HOME / "server-home").glob("*.db*"))
    assert any(f.name.endswith(".db") for f in files), files
    return b"".join(f.read_bytes() for f in files)


def test_secrets_never_reach_the_prefect_database(tmp_path, prefect_server):
    """Every way to start a run, with a password; then the server's SQLite files (+WAL) are
    searched for it. A visible marker sent the same way proves the search finds parameters."""
    from prefect.deployments import run_deployment

    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.runtime.serve import build_deployments

    secret = f"hunter2-{uuid.uuid4().hex}"
    marker = f"visible-{uuid.uuid4().hex}"
    plate = str(_plate(tmp_path))
    # 1-2. the CLI: a password in storage options, and in the plate URL
    cli = _cli(["run", plate, "--storage-options", json.dumps({"password": secret})])
    _assert_one_line(cli, r"storage option 'password' looks like a secret")
    cli = _cli(["run", f"s3://alice:{secret}@bucket/plates/P"])
    _assert_one_line(cli, r"parameter 'plate' holds a URL with a password")
    # 3-5. the Python API: storage options, a signed URL, a secret buried in a pipeline document
    for params in (
        {"storage_options": {"user": "alice", "password": secret}},
        {"plate": f"https://host/plates/P?X-Amz-Signature={secret}"},
        {
            "pipeline": _pipeline(
                [{"func": {"name": "max_projection", "kwargs": {"token": secret}}}]
            )
        },
    ):
        with pytest.raises(UserFacingError, match="refused before creating the flow run") as info:
            process_plate(**{"plate": plate, **params})
        assert secret not in str(info.value)
    # 6-8. deployments (what `serve`, the UI and run_deployment use): the server refuses
    suffix = uuid.uuid4().hex[:8]
    for deployment in build_deployments(f"hostile-{suffix}"):
        deployment.apply()
    refused = [
        ("process-plate", {"plate": plate, "storage_options": {"password": secret}}),
        ("process-plate", {"plate": f"s3://alice:{secret}@bucket/P"}),
        ("process-screen", {"plates": [plate], "storage_options": {"api_token": secret}}),
    ]
    for flow_name, params in refused:
        with pytest.raises(Exception, match="(?i)validation failed|409|conflict"):
            run_deployment(f"{flow_name}/hostile-{suffix}", parameters=params, timeout=0)
    # the positive control: a harmless value sent the same way is stored
    run_deployment(
        f"process-plate/hostile-{suffix}",
        parameters={"plate": plate, "storage_options": {"marker": marker}},
        timeout=0,
    )
    time.sleep(3)  # let the server's batched writers (logs, events) flush before searching
    data = _server_db_bytes()
    assert marker.encode() in data  # the search does see stored parameters
    assert secret.encode() not in data


def test_deployment_parameter_schema_rejects_secret_keys_and_urls():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.runtime.watch import watch_plates

    for fn, base in ((process_plate.fn, {"plate": "/p"}), (watch_plates.fn, {"folder": "/f"})):
        schema = parameter_schema(fn).model_dump()
        validate({**base, "storage_options": {"credentials_block": "omero"}}, schema, True)
        for bad in (
            {"storage_options": {"Password": "x"}},
            {"storage_options": {"secret_key": "x"}},
            {"global_config": "https://u:p@host/x"},
        ):
            with pytest.raises(ValidationError):
                validate({**base, **bad}, schema, raise_on_error=True)
    from prefect_hcs.runtime.serve import build_deployments

    with pytest.raises(UserFacingError, match="parameter 'global_config' holds a URL"):
        build_deployments("x", defaults={"global_config": "https://u:pw@host/g.yaml"})


# ------------------------------------------------------------------------------ console (Build 8)
def _cli(args: list[str], cwd: Path | None = None, env: dict | None = None):
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=full_env
    )


def _assert_one_line(result, pattern: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out
    assert re.search(pattern, out, re.S), out


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory) -> dict[str, Path]:
    """Plates and files for the table of mistaken invocations (made once)."""
    d = tmp_path_factory.mktemp("mistakes")
    good = _plate(d, "Good")
    missing = _plate(d, "Missing")
    sorted(missing.rglob("*_A02_s3_w2*.tif"))[0].unlink()
    corrupt = _plate(d, "Corrupt")
    victim = sorted(corrupt.rglob("*_A02_s2_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    lying = _plate(d, "Lying")
    _lie(sorted(lying.rglob("*_A01_s1_w1*.tif"))[0])
    (d / "empty").mkdir()
    (d / "afile").write_text("x")
    (d / "out-file.yaml").write_text(
        f"path_planning_config:\n  global_output_folder: {d / 'afile'}\n"
    )
    (d / "typo.yaml").write_text("name: t\nsteps:\n  - func: max_projektion\n")
    (d / "broken.yaml").write_text("name: [unclosed\n")
    (d / "escape.yaml").write_text(
        "name: e\nsteps:\n  - name: ../../escape\n    func: max_projection\n"
    )
    (d / "deep.yaml").write_text(_deep_yaml())
    (d / "big.yaml").write_text("# padding\n" * 200_000)
    (d / "badvalue.yaml").write_text("vfs_config:\n  materialization_backend: omero_local\n")
    (d / "blocks-bad").mkdir()
    (d / "blocks-bad" / "x.yaml").write_text("block_type: [unclosed\n")
    return {"d": d, "good": good, "missing": missing, "corrupt": corrupt, "lying": lying}


# (id, argv with {placeholders}, regex the one error line must match)
MISTAKES = [
    ("run: plate folder missing", ["run", "{d}/nope"], r"nope"),
    ("run: folder is not a plate", ["run", "{d}/empty"], r"empty"),
    ("run: pipeline file missing", ["run", "{good}", "--pipeline", "{d}/nope.yaml"], r"pipeline file not found"),
    ("run: unknown function", ["run", "{good}", "--pipeline", "{d}/typo.yaml"], r"max_projektion"),
    ("run: pipeline not YAML", ["run", "{good}", "--pipeline", "{d}/broken.yaml"], r"not valid YAML"),
    ("run: step name escapes", ["run", "{good}", "--pipeline", "{d}/escape.yaml"], r"step name '\.\./\.\./escape'"),
    ("run: deeply nested pipeline", ["run", "{good}", "--pipeline", "{d}/deep.yaml"], r"nested more than 50"),
    ("run: 2 MB pipeline", ["run", "{good}", "--pipeline", "{d}/big.yaml"], r"refused before parsing"),
    ("run: block that does not exist", ["run", "{good}", "-g", "no-such-global-config"], r"no hcs-global-config block"),
    ("run: invalid config value", ["run", "{good}", "-p", "{d}/badvalue.yaml"], r"omero_local"),
    ("run: storage options not JSON", ["run", "{good}", "--storage-options", "{{nope"], r"not valid JSON"),
    ("run: password in storage options", ["run", "{good}", "--storage-options", '{{"password": "x"}}'], r"looks like a secret"),
    ("run: password in the plate URL", ["run", "s3://u:pw@bucket/P"], r"holds a URL with a password"),
    ("run: plate path with ..", ["run", "{d}/x/../Good"], r"contains '\.\.'"),
    ("run: missing plane", ["run", "{missing}"], r"missing"),
    ("run: lying TIFF header", ["run", "{lying}"], r"100000[×x]100000"),
    ("run: output folder is a file", ["run", "{good}", "-g", "{d}/out-file.yaml"], r"is a file, not a folder"),
    ("run: corrupt TIFF (a well fails)", ["run", "{corrupt}"], r"A02.*corrupt or truncated"),
    ("plan: deeply nested pipeline", ["plan", "{good}", "--pipeline", "{d}/deep.yaml"], r"nested more than 50"),
    ("plan: output folder is a file", ["plan", "{good}", "-g", "{d}/out-file.yaml"], r"is a file, not a folder"),
    ("plan: lying TIFF header", ["plan", "{lying}"], r"100000[×x]100000"),
    ("blocks apply: no such folder", ["blocks", "apply", "{d}/no-blocks"], r"not a folder"),
    ("blocks apply: broken YAML", ["blocks", "apply", "{d}/blocks-bad"], r"not valid YAML"),
    ("config explain: missing file", ["config", "explain", "-g", "{d}/nope.yaml"], r"file not found"),
    ("config explain: deeply nested file", ["config", "explain", "-g", "{d}/deep.yaml"], r"nested more than 50"),
    ("make-plate: unknown format", ["make-plate", "{d}/new", "--format", "operetta-x"], r"operetta-x"),
    ("make-plate: into a plate", ["make-plate", "{good}"], r"not empty"),
    ("make-plate: bad well", ["make-plate", "{d}/new2", "--wells", "A1x"], r"not a well id"),
    ("retry-failed: bad --since", ["retry-failed", "--since", "yesterday-ish"], r"yesterday-ish"),
]  # fmt: skip


@pytest.fixture(scope="module")
def mistake_results(mistakes, prefect_server) -> dict[str, subprocess.CompletedProcess]:
    """Every invocation of MISTAKES, run as real subprocesses (a few at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(case: tuple) -> subprocess.CompletedProcess:
        return _cli([a.format(**mistakes) for a in case[1]], cwd=mistakes["d"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([m[0] for m in MISTAKES], pool.map(one, MISTAKES), strict=True))


@pytest.mark.parametrize(("case_id", "argv", "pattern"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistaken_invocation_prints_one_line(case_id, argv, pattern, mistake_results):
    _assert_one_line(mistake_results[case_id], pattern)


def test_debug_shows_the_traceback_of_a_user_error(mistakes):
    result = _cli(["--debug", "plan", str(mistakes["good"]), "--pipeline", "nope.yaml"])
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "error: pipeline file not found" in result.stderr


def test_a_bug_still_prints_its_traceback(tmp_path, mistakes, prefect_server):
    """An unexpected exception (not a user error) keeps its traceback on the console."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import prefect_hcs.pipeline.compiler as c\n"
        "def boom(*a, **k):\n    raise ZeroDivisionError('a bug, not a user mistake')\n"
        "c.compile_plate = boom\n"
    )
    env = {"PYTHONPATH": str(hook)}
    for command in ("plan", "run"):
        result = _cli([command, str(mistakes["good"])], env=env)
        out = result.stdout + result.stderr
        assert result.returncode != 0
        assert "Traceback" in out and "ZeroDivisionError: a bug, not a user mistake" in out, out


# --------------------------------------------------------------------------------- the docs table
def test_docs_table_names_every_test():
    text = (ROOT / "docs" / "bad-input.md").read_text()
    section = text.split("## Hostile and mistaken input", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`test_hostile_input\.py::(\w+)", section))
    here = {n for n in globals() if n.startswith("test_")}
    assert named == here
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) >= len(here)
