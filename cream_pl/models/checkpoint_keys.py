"""The keys cream-pl adds to a Lightning checkpoint (standard library only).

:class:`~cream_pl.models.classifier.WSOLClassifier` writes them (``on_save_checkpoint``) and
:mod:`cream_pl.models.checkpoints` reads them; this is their one definition, below both, so that the
classifier does not import the checkpoint reader: the reader uses the classifier, never the other
way round.

Example:
    >>> checkpoint = {CLASS_KEY: "cream_pl.models.classifier.WSOLClassifier"}
    >>> checkpoint[CLASS_KEY].rsplit(".", 1)[-1]
    'WSOLClassifier'
"""

from __future__ import annotations

__all__ = ["CLASS_KEY", "CHECKPOINT_RECORD_KEY"]

CLASS_KEY = "cream_pl_class"
"""Dotted name of the classifier class that wrote the checkpoint (read by ``load_classifier``)."""

CHECKPOINT_RECORD_KEY = "cream_pl_checkpoint"
"""``{"epoch", "max_epochs", "last"}`` of the checkpoint's fit (read by ``WSOLClassifier.checkpoint_rule``)."""
