"""Training tests compile the same small train steps many times (one jit per ``train()`` call):
a persistent compilation cache while this folder's tests run keeps them fast."""

import tempfile

import jax
import pytest

_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="package", autouse=True)
def _compilation_cache():
    previous = {name: getattr(jax.config, name) for name in _SETTINGS}
    with tempfile.TemporaryDirectory(prefix="srs_jax_xla_cache_") as d:
        for name, value in zip(_SETTINGS, (d, 0.0, 0)):
            jax.config.update(name, value)
        yield
        for name, value in previous.items():  # other test folders are unaffected
            jax.config.update(name, value)
