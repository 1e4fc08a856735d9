"""ICFG-PEDES reader: ``ICFG-PEDES/ICFG-PEDES.json`` (or ``ICFG_PEDES.json``) plus ``imgs/``."""

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import TextReIDDataset

__all__ = ["ICFGPEDES"]


@DATASET_REGISTRY.register()
class ICFGPEDES(TextReIDDataset):
    """ICFG-PEDES (text-to-image person retrieval): train / test, one caption per image, no val.

    Records ``{"split", "captions", "file_path", "id"}``; the image is ``imgs/<file_path>``.
    Some copies name the annotation file ``ICFG_PEDES.json``; both names are accepted. See
    ``TextReIDDataset`` for arguments and attributes.
    """

    dataset_dir = "ICFG-PEDES"
    dataset_name = "ICFGPEDES"
    annotation_files = ("ICFG-PEDES.json", "ICFG_PEDES.json")
    image_key = "file_path"
    splits = ("train", "test")
    layout = (
        "<root>/ICFG-PEDES/\n"
        "  ICFG-PEDES.json      (or ICFG_PEDES.json) [{split: train|test, captions: [...],"
        " file_path, id}, ...]\n"
        "  imgs/<file_path>"
    )
