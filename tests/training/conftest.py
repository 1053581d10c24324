"""Training tests compile the same small train steps many times (one jit per ``train()`` call):
a persistent compilation cache for this test session keeps them fast."""

import tempfile

import jax
import pytest


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    with tempfile.TemporaryDirectory(prefix="srs_jax_xla_cache_") as d:
        jax.config.update("jax_compilation_cache_dir", d)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        yield
        jax.config.update("jax_compilation_cache_dir", None)
