"""One atomic writer for run files and benchmark outputs: whole file or none, plain-file mode."""

import json
import os
import stat

import pytest

from srs_jax.atomic_files import write_json_atomic, write_text_atomic
from srs_jax.training import run_files


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_mode_follows_the_umask_not_the_temporary_file(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_json_atomic(str(tmp_path / "a" / "b.json"), {"x": [1, 2]}, indent=1)
        run_files.write_json(str(tmp_path / "results.json"), {"y": 1.5})
    finally:
        os.umask(old)
    for path in (tmp_path / "a" / "b.json", tmp_path / "results.json"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    assert json.load(open(tmp_path / "a" / "b.json")) == {"x": [1, 2]}
    assert json.load(open(tmp_path / "results.json")) == {"y": 1.5}


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    write_text_atomic(str(path), "old\n")
    with pytest.raises(ValueError):
        write_json_atomic(str(path), {"bad": float("nan")}, allow_nan=False)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.txt"]
