"""Data: scan readers, the benchmark folder and labelled/unlabelled sampling."""

from .benchmark import (
    ArraySet,
    BenchmarkFolder,
    DataFolderError,
    Sample,
    carve_validation,
    load_arrays,
    load_full_masks,
    parse_labelled,
    split_labelled,
)
from .readers import (
    SUPPORTED_SUFFIXES,
    ReaderError,
    ReaderFileNotFoundError,
    ScanMeta,
    read_mask,
    read_scan,
    to_grayscale,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ArraySet",
    "BenchmarkFolder",
    "DataFolderError",
    "ReaderError",
    "ReaderFileNotFoundError",
    "Sample",
    "ScanMeta",
    "carve_validation",
    "load_arrays",
    "load_full_masks",
    "parse_labelled",
    "read_mask",
    "read_scan",
    "split_labelled",
    "to_grayscale",
]
