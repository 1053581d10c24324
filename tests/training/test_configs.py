"""Every config file loads and validates; reference settings; bad configs fail in one line."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from configs import base, benchmarks
from srs_jax.training import config_checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not os.path.basename(f).startswith("_") and os.path.basename(f) != "benchmarks.py")


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_file_loads_validates_and_documents_its_command(path):
    module = _load(path)
    config = config_checks.resolve_config(module.get_config())
    config_checks.validate_config(config)
    assert config.model.compute_dtype in ("float32", "bfloat16")
    name = os.path.basename(path)
    assert f"configs/{name}" in module.__doc__ or name == "base.py"
    assert "python -m experiments.train" in module.__doc__


def test_base_has_every_field_with_reference_defaults():
    c = base.get_config()
    assert (c.model.hidden, c.model.num_blocks, c.model.num_heads, c.model.dropout) == (256, 2, 2, 0.1)
    assert (c.train.lr, c.train.b1, c.train.b2, c.train.max_epochs, c.train.patience) == (1e-3, 0.9, 0.98, 20, 4)
    assert c.model.compute_dtype == "auto" and c.train.schedule == "constant"
    assert list(c.eval.ks) == [1, 5, 10, 20, 100] and c.eval.coverage_mode == "reference"
    for field in ("type", "num_negatives", "sampler", "sharing", "impl", "gbce_t", "sce_n_buckets"):
        assert field in c.loss
    for field in ("batch_size", "warmup_steps", "grad_clip", "eval_batch_size", "prefetch"):
        assert field in c.train
    for field in ("user_chunk", "item_chunk", "metrics", "monitor"):
        assert field in c.eval
    assert c.data.name == "synthetic" and "workdir" in c


@pytest.mark.parametrize("dataset,expected", [
    ("30music", (256, 720, 4095)), ("beauty", (1024, 32, 511)), ("gowalla", (1024, 320, 511)),
    ("megamarket", (5120, 320, 1023)), ("movielens_20m", (256, 512, 511)), ("zvuk", (1024, 128, 2047))])
def test_reference_cce_settings(dataset, expected):
    neg = _load(os.path.join(ROOT, "configs", f"{dataset}_cce_neg.py")).get_config()
    full = _load(os.path.join(ROOT, "configs", f"{dataset}_cce.py")).get_config()
    assert (neg.train.batch_size, neg.model.max_len, neg.loss.num_negatives) == expected
    assert (full.train.batch_size, full.model.max_len) == expected[:2]
    assert neg.loss.type == "cce_neg" and full.loss.type == "cce" and neg.data.name == dataset


def test_shared_configs_follow_data_dir(monkeypatch):
    monkeypatch.setenv("DATA_DIR", "/somewhere")
    c = benchmarks.shared_config("amazon_games", "ce")
    assert c.data.path == "/somewhere/amazon_video_games_sasrec.txt"
    assert c.data.split == "leave_one_out" and c.loss.type == "ce"
    with pytest.raises(ValueError, match="no setting"):
        benchmarks.shared_config("amazon_games", "sce")
    with pytest.raises(ValueError, match="no reference setting"):
        benchmarks.benchmark_config("zvuk", "bce")


@pytest.mark.parametrize("field,value,match", [
    ("loss.type", "cross_entropy", "loss.type"),
    ("loss.num_negatives", 0, "negatives"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.schedule", "linear", "train.schedule"),
    ("eval.monitor", "ndcg@7", "eval.monitor"),
    ("model.compute_dtype", "float16", "compute_dtype"),
    ("eval.coverage_mode", "catalog", "coverage_mode"),
    ("loss.dc_accum", "float16", "loss.dc_accum"),
    ("loss.row_sampling", "feistel", "loss.row_sampling"),
])
def test_invalid_values_give_one_line_errors(field, value, match):
    c = base.get_config()
    c.loss.type = "cce_neg"
    c.loss.num_negatives = 7
    section, key = field.split(".")
    c[section][key] = value
    with pytest.raises(ValueError, match=match) as err:
        config_checks.validate_config(c)
    assert "\n" not in str(err.value)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["--config.train.batch_sise=3"], "batch_sise"),
    (["--config.train.batch_size=abc"], "batch_size"),
    (["--config=configs/no_such_config.py"], "no_such_config.py"),
    (["--config.loss.type=focal"], "loss.type"),
    (["--config.data.path=/no/such/file.txt"], "/no/such/file.txt"),
])
def test_command_rejects_bad_input_in_one_line(tmp_path, args, needle):
    base_args = ["--config=configs/amazon_games_ce.py", f"--workdir={tmp_path / 'run'}",
                 f"--config.data.cache_dir={tmp_path / 'cache'}"]
    out = _cli(*base_args, *args)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
