"""Data: the WSOL benchmark format, the embedded synthetic benchmark, the CUB converter, the datamodule.

Example:
    >>> from cream_pl.data import WSOLDataModule, generate_synthetic_dataset, read_split
"""

from __future__ import annotations

from cream_pl.data.cub import CubSummary, convert_cub
from cream_pl.data.datamodule import WSOLDataModule, WSOLDataset, protocol_mask, wsol_collate
from cream_pl.data.images import ImageFileError, load_image_rgb, load_mask_gray, read_image_size
from cream_pl.data.metadata import (
    MaskRecord,
    MetadataError,
    SampleRecord,
    SplitMetadata,
    WSOLDataError,
    check_split,
    read_class_names,
    read_split,
    write_class_names,
    write_split,
)
from cream_pl.data.synth import SynthConfig, generate_synthetic_dataset
from cream_pl.data.transforms import build_eval_transform, build_train_transform

__all__ = [
    "CubSummary",
    "ImageFileError",
    "MaskRecord",
    "MetadataError",
    "SampleRecord",
    "SplitMetadata",
    "SynthConfig",
    "WSOLDataError",
    "WSOLDataModule",
    "WSOLDataset",
    "build_eval_transform",
    "build_train_transform",
    "check_split",
    "convert_cub",
    "generate_synthetic_dataset",
    "load_image_rgb",
    "load_mask_gray",
    "protocol_mask",
    "read_class_names",
    "read_image_size",
    "read_split",
    "wsol_collate",
    "write_class_names",
    "write_split",
]
