"""Data I/O: XC sparse text, scipy .npz, LF json.gz and raw-text folders; validation and conversion.

Import-light on purpose (numpy and scipy only): the CLI imports it for `lever data` and `lever eval`.
"""

from lever_plugins.data.convert import convert, read_matrix, validate_path, write_matrix
from lever_plugins.data.dataset import Dataset
from lever_plugins.data.lf_json import (
    detect_layout,
    load_dataset,
    read_filter,
    read_texts,
    write_lf_json,
    write_raw,
)
from lever_plugins.data.npz import read_npz, write_npz
from lever_plugins.data.xc_text import read_sparse, write_sparse

__all__ = [
    "Dataset",
    "convert",
    "detect_layout",
    "load_dataset",
    "read_filter",
    "read_matrix",
    "read_npz",
    "read_sparse",
    "read_texts",
    "validate_path",
    "write_lf_json",
    "write_matrix",
    "write_npz",
    "write_raw",
    "write_sparse",
]
