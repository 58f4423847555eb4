"""Data: the WSOL benchmark format, the pseudo-box file format, the embedded synthetic benchmark, the CUB converter, the datamodule.

May import: cream_pl.core only.

The names are loaded on first use (PEP 562): ``import cream_pl.data.metadata`` (``cream-pl data
check``, ``cream-pl evaluate``) imports neither torch nor Lightning.

Example:
    >>> from cream_pl.data import WSOLDataModule, generate_synthetic_dataset, read_split
"""

from __future__ import annotations

from cream_pl.core.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "CubSummary": "cream_pl.data.cub",
    "convert_cub": "cream_pl.data.cub",
    "WSOLDataModule": "cream_pl.data.datamodule",
    "WSOLDataset": "cream_pl.data.datamodule",
    "protocol_mask": "cream_pl.data.datamodule",
    "wsol_collate": "cream_pl.data.datamodule",
    "WSOLDataError": "cream_pl.data.errors",
    "ImageFileError": "cream_pl.data.images",
    "load_image_rgb": "cream_pl.data.images",
    "load_mask_gray": "cream_pl.data.images",
    "read_image_size": "cream_pl.data.images",
    "MaskRecord": "cream_pl.data.metadata",
    "MetadataError": "cream_pl.data.metadata",
    "SampleRecord": "cream_pl.data.metadata",
    "SplitMetadata": "cream_pl.data.metadata",
    "check_split": "cream_pl.data.metadata",
    "read_class_names": "cream_pl.data.metadata",
    "read_split": "cream_pl.data.metadata",
    "write_class_names": "cream_pl.data.metadata",
    "write_split": "cream_pl.data.metadata",
    "SynthConfig": "cream_pl.data.synth",
    "generate_synthetic_dataset": "cream_pl.data.synth",
    "build_eval_transform": "cream_pl.data.transforms",
    "build_train_transform": "cream_pl.data.transforms",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(_EXPORTS, globals())
