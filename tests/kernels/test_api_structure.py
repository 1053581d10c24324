"""The shape of the public API: what ``pallas_kernels`` exports, the parameter limits of the
loss functions, no module using another module's ``_private`` names, no ``srs_jax`` import,
and a docstring on every module."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pathlib

import pallas_kernels as pk

ROOT = pathlib.Path(pk.__file__).parent
PACKAGE = "pallas_kernels"

EXPORTS = {
    "linear_cross_entropy", "linear_cross_entropy_fwd", "linear_cross_entropy_bwd", "CCEConfig",
    "sampled_linear_cross_entropy", "sampled_linear_cross_entropy_fwd",
    "sampled_linear_cross_entropy_bwd", "SampledConfig", "PopularityTable", "popularity_table",
    "sampled_negative_ids", "VocabParallelOptions", "shard_map",
    # references
    "linear_cross_entropy_reference", "sampled_ce_reference", "sampled_ce_reference_np",
}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path, ast.parse(path.read_text(), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(tree, module: str):
    """(imported module, {name: alias}) for every ``import`` / ``from ... import`` in ``tree``."""
    aliases = {}  # local name -> pallas_kernels module it stands for
    found = []
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append((a.name, None))
                if a.name.startswith(PACKAGE):
                    aliases[a.asname or PACKAGE] = a.name if a.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                found.append((base, a.name))
                if base.startswith(PACKAGE):
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
    return found, aliases


def test_exports_are_the_contract():
    assert set(pk.__all__) == EXPORTS
    for name in EXPORTS:
        assert getattr(pk, name) is not None


def test_no_module_uses_another_modules_private_names():
    bad = []
    for module, path, tree in _modules():
        found, aliases = _imports(tree, module)
        for base, name in found:
            if base.startswith(PACKAGE) and name and _is_private(name):
                bad.append(f"{path.name}: from {base} import {name}")
        for node in ast.walk(tree):
            # alias._private where alias is a pallas_kernels module (or a name imported from one)
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in aliases:
                    bad.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_package_never_imports_srs_jax():
    for module, path, tree in _modules():
        found, _ = _imports(tree, module)
        assert not [b for b, _ in found if b.split(".")[0] == "srs_jax"], path


def test_every_module_has_a_docstring():
    for module, path, tree in _modules():
        doc = ast.get_docstring(tree)
        assert doc and len(doc) > 40, f"{path} has no module docstring"


def test_loss_signatures_stay_within_the_limits():
    limits = {pk.linear_cross_entropy: 10, pk.linear_cross_entropy_fwd: 10,
              pk.linear_cross_entropy_bwd: 10, pk.sampled_linear_cross_entropy: 12,
              pk.sampled_linear_cross_entropy_fwd: 12, pk.sampled_linear_cross_entropy_bwd: 12}
    for fn, limit in limits.items():
        params = inspect.signature(fn).parameters
        assert len(params) <= limit, (fn.__name__, len(params))
    # The contract's keyword arguments, by name.
    assert list(inspect.signature(pk.linear_cross_entropy).parameters) == [
        "embeddings", "classifier", "targets", "where", "reduction", "impl", "config",
        "vocab_parallel"]
    assert list(inspect.signature(pk.sampled_linear_cross_entropy).parameters) == [
        "embeddings", "classifier", "targets", "num_negatives", "seed", "sampler", "sharing",
        "where", "reduction", "impl", "config", "vocab_parallel"]
    assert [f.name for f in dataclasses.fields(pk.VocabParallelOptions)] == [
        "mesh", "vocab_axis", "data_axis", "col_start", "num_classes"]


def test_configs_are_small_frozen_dataclasses():
    for cls in (pk.CCEConfig, pk.SampledConfig):
        fields = dataclasses.fields(cls)
        assert 4 <= len(fields) <= 8, (cls.__name__, len(fields))
        assert cls.__dataclass_params__.frozen
        assert "ms" not in (cls.__doc__ or "")  # no timing tables in the docstring
    assert pk.SampledConfig().block_rows == 128


def test_benchmarks_use_the_public_api_only():
    experiments = ROOT.parent / "experiments"
    for name in ("benchmark_loss.py", "benchmark_sampled.py"):
        path = experiments / name
        tree = ast.parse(path.read_text(), filename=str(path))
        found, aliases = _imports(tree, "experiments." + name[:-3])
        bad = [f"from {b} import {n}" for b, n in found
               if b.startswith(PACKAGE) and n and _is_private(n)]
        bad += [ast.unparse(node) for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and _is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in aliases]
        assert not bad, (name, bad)
        assert {b for b, _ in found if b.startswith(PACKAGE)} <= {
            "pallas_kernels", "pallas_kernels.cce.config", "pallas_kernels.cce_neg.config"}, name
