"""napari-cultureseg: segment label-free cell-culture images into overlapping classes."""

__version__ = "0.1.0"
