"""Reporting: tables and atomic JSON / markdown writers, figures and overlays, the W&B logger and media, evidence (paired differences with intervals), the demos' reports.

May import: core, data, models, metrics and pseudo_boxes; never pipelines or cli.
"""
