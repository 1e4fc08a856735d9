"""RSTPReid reader: ``RSTPReid/data_captions.json`` plus ``RSTPReid/imgs/``."""

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import TextReIDDataset

__all__ = ["RSTPReid"]


@DATASET_REGISTRY.register()
class RSTPReid(TextReIDDataset):
    """RSTPReid (text-to-image person retrieval): train / val / test, two captions per image.

    Records ``{"split", "captions", "img_path", "id"}`` (``img_path``, not ``file_path``); the
    image is ``imgs/<img_path>``. See ``TextReIDDataset`` for arguments and attributes.
    """

    dataset_dir = "RSTPReid"
    dataset_name = "RSTPReid"
    annotation_files = ("data_captions.json",)
    image_key = "img_path"
    splits = ("train", "val", "test")
    layout = (
        "<root>/RSTPReid/\n"
        "  data_captions.json   [{split: train|val|test, captions: [...], img_path, id}, ...]\n"
        "  imgs/<img_path>"
    )
