"""Tiny trained runs shared by the export and warm-start tests (each trained once per test run)."""

import pytest

from export.runs import tiny_config, train_run


@pytest.fixture(scope="package")
def tiny_run(tmp_path_factory):
    """``tiny_run(model)`` -> folder of a finished 1-epoch run of ``model`` (sasrec | bert4rec)."""
    built = {}

    def get(model: str) -> str:
        if model not in built:
            tmp = tmp_path_factory.mktemp(f"run_{model}")
            built[model] = train_run(tiny_config(tmp, model), tmp / "run")
        return built[model]

    return get
