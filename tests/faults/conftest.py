"""Fixtures of the fault suite: one good tiny run per test run, copied for each test that damages
or resumes it."""

from __future__ import annotations

import shutil

import pytest

from tests.faults import harness


@pytest.fixture(scope="package")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fault_cache"))


@pytest.fixture(scope="package")
def good_run_session(tmp_path_factory, cache_dir):
    """``(workdir, completed process)`` of one finished tiny run (progress every step)."""
    workdir = str(tmp_path_factory.mktemp("fault_good") / "run")
    p = harness.run("experiments.train", *harness.tiny_args(cache_dir), "--workdir", workdir,
                    extra_env={"SRS_JAX_PROGRESS_SECONDS": 0})
    assert p.returncode == 0, p.stderr[-3000:]
    return workdir, p


@pytest.fixture
def good_run(good_run_session, tmp_path) -> str:
    """A private copy of the good run (``shutil.copytree`` keeps the bytes)."""
    dst = str(tmp_path / "run")
    shutil.copytree(good_run_session[0], dst)
    return dst


@pytest.fixture
def tiny(cache_dir) -> list[str]:
    return harness.tiny_args(cache_dir)

