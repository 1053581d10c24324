"""Every config file loads and validates; reference settings; bad configs fail in one line."""

import ast
import dataclasses
import glob
import importlib.util
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from srs_jax.config import (ConfigError, DataSpec, LossSpec, MeshSpec, ModelSpec, RunSpec, TrainSpec,
                            dataset_config, load_specs, presets, run_config)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not os.path.basename(f).startswith("_"))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_file_loads_validates_and_documents_its_command(path):
    module = _load(path)
    config = load_specs(module.get_config())
    assert config.model.compute_dtype in ("float32", "bfloat16")
    name = os.path.basename(path)
    assert f"configs/{name}" in module.__doc__ or name == "base.py"
    assert "python -m experiments.train" in module.__doc__


def test_config_files_import_only_the_package():
    # Given by path from any working directory, a config needs nothing but srs_jax installed.
    for path in CONFIG_FILES + [os.path.join(ROOT, "configs", "__init__.py")]:
        tree = ast.parse(open(path).read())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert roots <= {"srs_jax", "ml_collections", "__future__"}, (path, roots)


def test_a_config_given_by_path_loads_from_another_directory(tmp_path):
    code = ("import importlib.util, sys\n"
            "s = importlib.util.spec_from_file_location('c', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            "from srs_jax.config import load_specs\n"
            "print(load_specs(m.get_config()).loss.type)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-P", "-c", code, os.path.join(ROOT, "configs", "beauty_bert4rec_cce_neg.py")],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "cce_neg", out.stderr


def test_specs_round_trip_through_config_json():
    spec = load_specs(presets.bert4rec_shared_config("amazon_sports", "cce_neg"))
    text = ml_collections.ConfigDict(spec.to_dict()).to_json_best_effort()
    assert load_specs(json.loads(text)) == spec
    assert load_specs(spec.to_dict()) == spec and load_specs(spec) == spec
    assert spec.data.columns.user == "user" and spec.data.time_until is None
    assert isinstance(spec.data, DataSpec) and spec.data.columns.to_dict()["item"] == "item"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.loss.type = "ce"


def test_defaults_are_the_spec_defaults_and_auto_is_resolved_once():
    c = run_config()
    assert c.model.compute_dtype == "auto" and c.train.window_stride is None
    spec = load_specs(c)
    assert spec.model.compute_dtype in ("float32", "bfloat16")
    assert spec.model == dataclasses.replace(ModelSpec(), compute_dtype=spec.model.compute_dtype)
    assert spec.loss == LossSpec() and spec.train == TrainSpec() and spec.mesh == MeshSpec()
    c.train.window_stride = 25  # a typed placeholder: the override keeps its type
    assert load_specs(c).train.window_stride == 25
    # Missing sections and data fields take the defaults (of the named dataset).
    partial = load_specs({"data": {"name": "zvuk"}, "loss": {"type": "ce"}})
    assert partial.data.columns.item == "track_id" and partial.data.format == "parquet"
    assert partial.data == DataSpec.from_dict(dataset_config("zvuk"))
    assert isinstance(partial, RunSpec) and partial.loss.type == "ce"


@pytest.mark.parametrize("section,key,kept,removed", [
    ("mesh", "lookup", "xla", "shard_map"), ("loss", "dc_accum", "float32", "bfloat16"),
    ("loss", "row_sampling", "independent", "permutation")])
def test_retired_keys_load_when_harmless_only(section, key, kept, removed):
    # A config.json of an earlier run still loads; a removed behaviour stops in one line.
    values = run_config().to_dict()
    values[section][key] = kept
    assert load_specs(values) == load_specs(run_config())
    values[section][key] = removed
    with pytest.raises(ConfigError, match=f"{section}.{key}.*removed") as err:
        load_specs(values)
    assert "\n" not in str(err.value)


def test_base_has_every_field_with_reference_defaults():
    c = run_config()
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
    # The reference's batch and length; its negatives x16, shared by blocks (docs/decisions/009).
    assert (neg.train.batch_size, neg.model.max_len) == expected[:2]
    assert presets.SETTINGS[dataset]["cce_neg"] == expected
    assert neg.loss.sharing == "block" and neg.loss.num_negatives == 16 * (expected[2] + 1) - 1
    assert (full.train.batch_size, full.model.max_len) == expected[:2]
    assert neg.loss.type == "cce_neg" and full.loss.type == "cce" and neg.data.name == dataset


def test_shared_configs_follow_data_dir(monkeypatch):
    monkeypatch.setenv("DATA_DIR", "/somewhere")
    c = presets.shared_config("amazon_games", "ce")
    assert c.data.path == "/somewhere/amazon_video_games_sasrec.txt"
    assert c.data.split == "leave_one_out" and c.loss.type == "ce"
    with pytest.raises(ValueError, match="no setting"):
        presets.shared_config("amazon_games", "sce")
    with pytest.raises(ValueError, match="no reference setting"):
        presets.benchmark_config("zvuk", "bce")


@pytest.mark.parametrize("field,value,match", [
    ("loss.type", "cross_entropy", "loss.type"),
    ("loss.num_negatives", 0, "negatives"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.schedule", "linear", "train.schedule"),
    ("eval.monitor", "ndcg@7", "eval.monitor"),
    ("model.compute_dtype", "float16", "compute_dtype"),
    ("eval.coverage_mode", "catalog", "coverage_mode"),
    ("loss.sharing", "batch", "loss.sharing"),  # cce_neg shares by row or block
    ("loss.impl", "naive", "loss.impl"),
    ("model.name", "gru4rec", "model.name"),
    ("model.hidden", 31, "model.hidden"),  # not a multiple of num_heads
    ("train.window_stride", 0, "window_stride"),
    ("data.split", "random", "data.split"),
    ("data.time_quantile", 1.5, "time_quantile"),
    ("mesh.vocab", 0, "mesh.vocab"),
])
def test_invalid_values_give_one_line_errors(field, value, match):
    c = run_config()
    c.loss.type = "cce_neg"
    c.loss.num_negatives = 7
    values = c.to_dict()
    section, key = field.split(".")
    values[section][key] = value
    with pytest.raises(ConfigError, match=match) as err:
        load_specs(values)
    assert "\n" not in str(err.value) and str(err.value).startswith("config.")


@pytest.mark.parametrize("values,match", [
    ({"train": {"batch_sise": 3}}, "config.train.batch_sise is not a known field"),
    ({"train": {"batch_size": "abc"}}, "config.train.batch_size='abc' is invalid: give a int"),
    ({"loss": {"type": "ce"}, "mesh": {"vocab": 2}}, "mesh.vocab > 1"),
    ({"loss": {"type": "cce_neg", "num_negatives": 8191, "sharing": "block"}, "mesh": {"vocab": 2}},
     "config.loss.sharing='block' is invalid: with mesh.vocab > 1 cce_neg draws negatives per row"),
    ({"data": {"columns": {"usr": "a"}}}, "config.data.columns.usr"),
    ({"optimizer": {}}, "config.optimizer is not a known field"),
])
def test_unknown_keys_bad_types_and_cross_checks(values, match):
    with pytest.raises(ConfigError, match=match):
        load_specs(values)


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
