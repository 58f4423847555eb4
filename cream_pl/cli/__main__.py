"""``python -m cream_pl.cli``: the ``cream-pl`` command."""

import sys

from cream_pl.cli.app import main

sys.exit(main())
