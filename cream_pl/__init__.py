"""cream-pl: weakly supervised object localization (CAM, CREAM, CREAM_reg, KD-CI-CAM) on PyTorch Lightning."""

__version__ = "0.1.0"
