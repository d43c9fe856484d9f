"""napari-propl: the napari plugin over the ``propl`` core."""

from propl import __version__

__all__ = ["__version__"]
