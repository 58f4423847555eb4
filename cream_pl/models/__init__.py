"""Models: backbones, the CAM / CREAM / CI-CAM math as pure tensor functions, the WSOL training methods, and the LightningModules;
``checkpoints`` is the one reader of checkpoints and the one check that a checkpoint and a dataset
agree (class count, labels), ``devices`` the one check of ``--device`` and Trainer device options.

May import: core, data and metrics; never pseudo_boxes, pipelines, cli or reporting.
"""

from cream_pl.models.classifier import WSOLClassifier

__all__ = ["WSOLClassifier"]
