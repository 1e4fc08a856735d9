"""Dataset readers, registered in fast-reid's ``DATASET_REGISTRY`` on import."""

from . import cuhkpedes, icfgpedes, rgbtpedes, rstpreid  # noqa: F401
from .text_reid import DatasetFormatError, DatasetLayoutError, TextReIDDataset  # noqa: F401
