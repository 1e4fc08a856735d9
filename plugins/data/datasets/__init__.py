"""Dataset readers, registered in fast-reid's ``DATASET_REGISTRY`` on import."""

from . import cuhkpedes, icfgpedes, llcm, regdb, rgbtpedes, rstpreid, sysumm01  # noqa: F401
from .text_reid import DatasetFormatError, DatasetLayoutError, TextReIDDataset  # noqa: F401
from .vi_reid import VIReIDDataset  # noqa: F401
