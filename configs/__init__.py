"""ml_collections configs: ``python -m experiments.train --config configs/<name>.py``."""
