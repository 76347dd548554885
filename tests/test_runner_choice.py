"""`task_runner: auto` (the default): which runner a plan gets, and when `processes` is refused."""

from __future__ import annotations

import pytest
from helpers import make_layout

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.config import load_layer
from prefect_hcs.pipeline.backends import choose_backends
from prefect_hcs.pipeline.discover import discover
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.pipeline.resolution import resolve_layers
from prefect_hcs.pipeline.shapes import check_pipeline
from prefect_hcs.processing.registry import register

DEMO = load_pipeline("demo")


def chosen_for(global_data, fmt="imagexpress", pipeline=DEMO, url=None):
    layout = make_layout(2, fmt=fmt)
    if url:
        layout = layout.model_copy(update={"url": url})
    found = discover(layout, pipeline, None, None)
    res = resolve_layers(found, load_layer(global_data, layer="global"), None)
    return choose_backends(res, found.steps, check_pipeline(res, found.steps))


@pytest.mark.parametrize(
    ("data", "runner"),
    [
        ({}, "processes"),  # the default: 2 workers
        ({"num_workers": 1}, "threads"),
        ({"num_workers": 4}, "processes"),
        ({"execution_config": {"dask_address": "tcp://127.0.0.1:8786"}}, "dask"),
        ({"execution_config": {"slurm_cluster": "hpc"}}, "slurm"),
        ({"execution_config": {"task_runner": "threads"}}, "threads"),
        ({"num_workers": 1, "execution_config": {"task_runner": "processes"}}, "processes"),
    ],
)
def test_auto_picks_processes_for_several_workers(data, runner):
    chosen = chosen_for(data)
    assert chosen.runner == runner and not chosen.problems


def test_processes_keep_a_wells_intermediates_in_memory_like_threads():
    threads = chosen_for({"execution_config": {"task_runner": "threads"}})
    processes = chosen_for({})
    assert processes.in_memory and processes.intermediate_root == threads.intermediate_root
    assert [s.write_reason for s in processes.steps] == [s.write_reason for s in threads.steps]


def test_auto_keeps_omero_plates_in_the_flow_process():
    chosen = chosen_for({}, fmt="omero")
    assert chosen.runner == "threads" and not chosen.problems


def test_explicit_processes_on_omero_is_one_clear_problem():
    chosen = chosen_for({"execution_config": {"task_runner": "processes"}}, fmt="omero")
    assert len(chosen.problems) == 1
    problem = chosen.problems[0]
    assert "task_runner (global layer" in problem and "is 'processes'" in problem
    assert "OMERO" in problem and "set task_runner: threads" in problem


def _local_function():
    def local_double(stack):
        return stack * 2

    return local_double


def test_functions_workers_cannot_import_keep_auto_on_threads():
    register("local_double_for_runner_test")(_local_function())
    pipeline = load_pipeline(
        {"name": "t", "steps": [{"name": "d", "func": "local_double_for_runner_test"}]}
    )
    assert chosen_for({}, pipeline=pipeline).runner == "threads"
    refused = chosen_for({"execution_config": {"task_runner": "processes"}}, pipeline=pipeline)
    assert "'local_double_for_runner_test' is defined in a function body" in refused.problems[0]


def test_memory_checkpoints_keep_auto_on_threads():
    data = {
        "vfs_config": {"materialization_backend": "memory"},
        "step_materialization_config": {"enabled": True},
    }
    assert chosen_for(data).runner == "threads"
    refused = chosen_for({**data, "execution_config": {"task_runner": "processes"}})
    assert "checkpoints are kept in memory" in refused.problems[0]


def test_plates_and_outputs_in_memory_keep_auto_on_threads():
    assert chosen_for({}, url="memory://plates/P1").runner == "threads"
    out = {"path_planning_config": {"global_output_folder": "memory://out"}}
    assert chosen_for(out).runner == "threads"
    refused = chosen_for({**out, "execution_config": {"task_runner": "processes"}})
    assert "the output is in memory:// (memory://out/P1_hcs)" in refused.problems[0]
