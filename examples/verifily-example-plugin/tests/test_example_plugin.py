"""Tests of the example plugin, the way a plugin author writes them: the objects on their own,
then inside Verifily's plugin manager and evaluation core. No model is loaded.

Run them after installing the package (``pip install -e .``): the last test checks that the
``verifily`` entry point is what finds the plugin.
"""

from __future__ import annotations

import pytest
import verifily_example_plugin as plugin

from verifily_core.evaluation import build_eval_result
from verifily_core.interfaces import ComputeBackend
from verifily_core.plugins import load_registries, make_plugin_manager

RECORDS = [  # evaluation records as the core builds them: prediction, reference, tags
    {"prediction": "apple", "reference": "apple", "tags": {"source": "human"}},
    {"prediction": "river bank", "reference": "river", "tags": {"source": "human"}},
    {"prediction": "", "reference": "stone", "tags": {"source": "synthetic"}},
    {"prediction": "CLOUD", "reference": "CLOUD", "tags": {"source": "ai_contaminated"}},
]


@pytest.fixture()
def registries():
    """Only this plugin plus the core's built-ins, without looking at what else is installed."""
    return load_registries(make_plugin_manager(entrypoints=False, plugins=[plugin]))


def test_the_plugin_registers_its_three_objects(registries):
    assert registries.metrics.get("response_length").higher_is_better is False
    assert registries.slicers.get("first_letter").name == "first_letter"
    assert isinstance(registries.backends.get("subprocess"), ComputeBackend)


def test_response_length_is_the_mean_prediction_length():
    metric = plugin.ResponseLength()
    preds = [r["prediction"] for r in RECORDS]
    assert metric.compute(preds, [r["reference"] for r in RECORDS], RECORDS) == (5 + 10 + 0 + 5) / 4
    assert metric.compute([], [], []) == 0.0


def test_first_letter_groups_rows_by_the_first_letter_of_a_tag_value():
    slices = plugin.FirstLetter().slices(RECORDS, ["source"])
    assert slices == {"source^=h": [0, 1], "source^=s": [2], "source^=a": [3]}


def test_metric_and_slicer_inside_the_evaluation_core(registries):
    result = build_eval_result(RECORDS, "sft", [registries.metrics.get("response_length")],
                               slicers=registries.slicers, slice_by="first_letter:source",
                               resamples=200, min_slice_size=1)
    overall = result.metric_values["response_length"]
    assert overall.value == pytest.approx(5.0) and overall.ci_low <= 5.0 <= overall.ci_high
    assert result.slices["source^=h"]["response_length"] == pytest.approx(7.5)
    assert result.slice_results["source^=s"].n == 1


def test_the_installed_package_is_found_through_its_entry_point():
    registries = load_registries(make_plugin_manager())
    assert registries.metrics.owner("response_length") == "example"
