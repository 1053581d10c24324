"""srs-jax: sequential recommenders with Cut Cross-Entropy in JAX."""

__version__ = "0.1.0"
