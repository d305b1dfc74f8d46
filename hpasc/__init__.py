"""hpasc: an end-to-end pipeline for the HPA single-cell classification task.

``hpasc.open_cells(path)`` opens a cell dataset folder written by image_cutter.py (see
``hpasc.cellstore``); it is imported on first use so that ``import hpasc`` stays light.
"""

from hpasc.core import __version__

__all__ = ["__version__", "open_cells"]


def __getattr__(name: str):
    if name == "open_cells":
        from hpasc.cellstore import open_cells

        return open_cells
    raise AttributeError(f"module 'hpasc' has no attribute {name!r}")
