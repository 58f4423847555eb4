"""Pseudo boxes, CREAM_reg's first stage: generation over a split (``generate``), the same from a classifier checkpoint and a dataset root (``from_checkpoint``, the work of ``cream-pl pseudo-boxes``) and the fit-end callback (``fit_end``); their COCO file format and its checks live in :mod:`cream_pl.data.pseudo_box_format`.

May import: core, data, models and metrics; never pipelines, cli or reporting.
"""
