"""Models: backbones, CAM/CREAM math, and the LightningModules."""

from cream_pl.models.classifier import WSOLClassifier

__all__ = ["WSOLClassifier"]
