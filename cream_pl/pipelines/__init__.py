"""Entry points: ``make demo`` / ``demo-kd`` / ``demo-methods`` / ``demo-seeds``, calibration, the CUB recipes, the regressor's training, ``localize``, score-map export and the benchmarks (``python -m cream_pl.pipelines.<name>``). Every entry point's
``main`` goes through ``entry`` (one-line user errors; output folders, input files and the dataset
checked before any work). ``recipe_builder`` turns a recipe YAML into a trainer, model and data module
(for the pipelines and for ``cream-pl fit``), and ``command_parsers`` holds the torch-free parsers of the
pipelines' ``cream-pl`` commands.

May import: every layer below (core, data, models, metrics, pseudo_boxes) and reporting; never cli (the
command line dispatches to the pipelines, never the other way round).
"""
