"""The base class of the data errors (standard library and :mod:`cream_pl.core.errors` only).

Every module of :mod:`cream_pl.data` that refuses a file raises a subclass of :class:`WSOLDataError`
(:class:`~cream_pl.data.metadata.MetadataError`, :class:`~cream_pl.data.images.ImageFileError`,
:class:`~cream_pl.data.pseudo_box_format.PseudoBoxFileError`). It lives below them all, so that
:mod:`cream_pl.data.images` does not import :mod:`cream_pl.data.metadata` for it: metadata uses
images (``check_split`` decodes files), never the other way round.

Example:
    >>> from cream_pl.core.errors import UserError
    >>> err = WSOLDataError("data/metadata/test/image_ids.txt:3: empty image id")
    >>> isinstance(err, UserError) and isinstance(err, ValueError)
    True
"""

from __future__ import annotations

from cream_pl.core.errors import UserError

__all__ = ["WSOLDataError"]


class WSOLDataError(UserError, ValueError):
    """Base class of the data errors raised by cream-pl (a ``ValueError`` and a one-line
    :class:`cream_pl.core.errors.UserError` that names the file)."""
