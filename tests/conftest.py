"""Fixtures shared by the test modules, and how the suite is split (markers registered in pyproject.toml):

- `slow`: trains, preprocesses, converts to OpenVINO, runs subprocesses or the cascade on real CTs (> ~5 s a test,
  its fixtures included);
  `python -m pytest -m "not slow"` runs the rest in under a minute.
- `real_data`: reads the real CTs of ../shared/data/real (cascade_oracles.REAL_DATA).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cascade_oracles import SMALL_CASCADE
from tool_modules import load_tool

write_random_cascade = load_tool("random_models").write_random_cascade

# module fixtures that train, preprocess or run subprocesses: every test that uses one is slow
SLOW_FIXTURES = {
    "smoke_run",  # test_demo.py: the demo's smoke run trains both phases
    "preprocessed", "trained",  # test_training.py: plan and preprocess; nnUNetv2_train
    "planned",  # test_plans.py: fingerprint and plans of a raw dataset
    "subprocess_runs",  # test_command_errors.py: every console script run as a subprocess
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _threads():
    """Two torch threads (the CI host has two cores); a module overrides this with its own `_threads`."""
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def random_cascade(tmp_path_factory) -> tuple[Path, Path]:
    """Locator and organ model folders (fold 'all', tiny random weights) under <results>/Dataset220_FLARE, one set
    per test module: OpenVINO caches its converted models inside them, and a module may count conversions."""
    return write_random_cascade(tmp_path_factory.mktemp("results"), "Dataset220_FLARE", tiny=True, **SMALL_CASCADE)
