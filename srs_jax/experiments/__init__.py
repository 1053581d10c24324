"""Experiment tooling behind ``experiments/*.py``: the grid search (``grid``), result tables
(``tables``), plots (``plots``) and the catalog-scale memory/time study (``catalog``)."""
