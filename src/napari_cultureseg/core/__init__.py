"""The Qt-free engine: images, tiling, models, bundles, training, post-processing, metrics.

Nothing here imports Qt, napari or magicgui (checked by ``tests/core/test_no_gui_imports.py``).
"""
