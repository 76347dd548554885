"""A pipeline built in Python may name its functions by the registered callable itself."""

from __future__ import annotations

import pytest

from prefect_hcs.pipeline.model import Pipeline, PipelineError
from prefect_hcs.processing.projection import max_projection


def test_a_registered_callable_becomes_its_registered_name():
    step = {"name": "p", "func": max_projection, "variable_components": ["z"]}
    pipeline = Pipeline.model_validate({"name": "py", "steps": [step]})
    assert pipeline.steps[0].function_names() == ["max_projection"]


def test_an_unregistered_callable_is_one_clear_error():
    def mine(stack):
        return stack

    with pytest.raises((PipelineError, ValueError), match="'mine' is not registered"):
        Pipeline.model_validate({"name": "py", "steps": [{"name": "p", "func": mine}]})
