"""``python -m napari_cultureseg.cli``: the ``cultureseg`` command."""

import sys

from . import main

sys.exit(main())
