"""propl: universal prompt-guided semi-supervised ultrasound segmentation (the core library).

The core never imports napari, Qt or magicgui; the napari plugin lives in ``napari_propl``.
"""

__version__ = "0.1.0"
