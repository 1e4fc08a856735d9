"""CUHK-PEDES reader: ``CUHK-PEDES/reid_raw.json`` plus ``CUHK-PEDES/imgs/``."""

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import TextReIDDataset

__all__ = ["CUHKPEDES"]


@DATASET_REGISTRY.register()
class CUHKPEDES(TextReIDDataset):
    """CUHK-PEDES (text-to-image person retrieval): train / val / test, about 2 captions per image.

    Records ``{"split", "captions", "file_path", "processed_tokens", "id"}``; the image is
    ``imgs/<file_path>``. See ``TextReIDDataset`` for arguments and attributes.
    """

    dataset_dir = "CUHK-PEDES"
    dataset_name = "CUHKPEDES"
    annotation_files = ("reid_raw.json",)
    image_key = "file_path"
    splits = ("train", "val", "test")
    layout = (
        "<root>/CUHK-PEDES/\n"
        "  reid_raw.json        [{split: train|val|test, captions: [...], file_path, id}, ...]\n"
        "  imgs/<file_path>     e.g. imgs/CUHK01/0363004.png"
    )
