"""Backbones for WSOL: a small interface, a timm-style registry and the four benchmark networks.

Example:
    >>> from cream_pl.models.backbones import create_backbone, list_backbones
    >>> list_backbones()
    ['efficientnet_lite0', 'inception_v3', 'resnet50', 'vgg16']
    >>> net = create_backbone("efficientnet_lite0", pretrained=True)  # offline ImageNet weights
    >>> net.num_features, net.feature_stride
    (1280, 16)
"""

from __future__ import annotations

# Importing each backbone module registers its backbone.
from cream_pl.models.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from cream_pl.models.backbones.efficientnet_lite0 import EfficientNetLite0Backbone
from cream_pl.models.backbones.inception_v3 import InceptionV3Backbone
from cream_pl.models.backbones.registry import create_backbone, list_backbones, register_backbone
from cream_pl.models.backbones.resnet50 import ResNet50Backbone
from cream_pl.models.backbones.vgg16 import VGG16Backbone

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "EfficientNetLite0Backbone",
    "InceptionV3Backbone",
    "ResNet50Backbone",
    "VGG16Backbone",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
