"""Entry points: ``make demo`` / ``demo-kd`` / ``demo-methods`` / ``demo-seeds``, calibration, the CUB recipes, the regressor's training, ``localize``, score-map export and the benchmarks (``python -m cream_pl.pipelines.<name>``). Every entry point's
``main`` goes through ``entry`` (one-line user errors; output folders, input files and the dataset
checked before any work).

May import: every layer below (core, data, models, metrics, pseudo_boxes), reporting, and cli's recipe builder.
"""
