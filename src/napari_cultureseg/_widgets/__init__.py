"""Qt dock widgets (the only place, with ``_demo.py``, that imports napari and Qt).

torch's optional compiler backend, triton, links its own LLVM. Loaded into a
process whose OpenGL runs on Mesa (llvmpipe, radeonsi: also LLVM), it
segfaults on import (seen with torch 2.14.1 + napari 0.9 under Xvfb). Our
models never use torch.compile, so in the napari process we keep triton out
before torch is imported; torch then runs without it. Set
``CULTURESEG_ALLOW_TRITON=1`` to opt out (e.g. a GPU machine without Mesa
that needs triton for another plugin).
"""

import os
import sys

if "triton" not in sys.modules and os.environ.get("CULTURESEG_ALLOW_TRITON") != "1":
    sys.modules["triton"] = None  # makes `import triton` raise ImportError
