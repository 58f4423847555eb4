"""Models: backbones, the CAM / CREAM / CI-CAM math as pure tensor functions, the WSOL training methods, and the LightningModules.

May import: core, data and metrics; never pseudo_boxes, pipelines, cli or reporting.
"""

from cream_pl.models.classifier import WSOLClassifier

__all__ = ["WSOLClassifier"]
