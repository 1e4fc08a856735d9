"""RGBT-PEDES reader: text-to-RGBT person retrieval over calibrated RGB + thermal pairs."""

import glob
import os

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import (
    DatasetFormatError,
    TextReIDDataset,
    check_files_exist,
    layout_error,
    load_json,
    shorten,
)

__all__ = ["RGBTPEDES"]


@DATASET_REGISTRY.register()
class RGBTPEDES(TextReIDDataset):
    """RGBT-PEDES: train / test of (RGB, thermal) pairs with captions and colour-free captions.

    A pair is ``RGB/<name>`` and ``T/<name>`` (``TGray/<name>`` in an older release), where
    ``<name>`` is the basename of the record's ``file_path``. Records carry a ``no_color_caption``
    list parallel to ``captions``. Optional ``challenge_json/<subset>.json`` files list test
    image names; each becomes ``test.subsets[<subset>]`` (gallery image ids). See
    ``TextReIDDataset`` for arguments and attributes; ``caption_file`` overrides the default
    ``caption_2_no_color.json``.
    """

    dataset_dir = "RGBT-PEDES"
    dataset_name = "RGBTPEDES"
    annotation_files = ("caption_2_no_color.json",)
    image_key = "file_path"
    splits = ("train", "test")
    has_no_color = True
    image_noun = "pairs"
    thermal_dirs = ("T", "TGray")
    subset_dir = "challenge_json"
    layout = (
        "<root>/RGBT-PEDES/\n"
        "  caption_2_no_color.json   [{split: train|test, captions: [...],"
        " no_color_caption: [...], file_path, id}, ...]\n"
        "  RGB/<name>                <name> = basename of file_path\n"
        "  T/<name>                  (or TGray/<name>) single-channel thermal image\n"
        "  challenge_json/<subset>.json   optional: [test image name, ...]"
    )

    def _resolve_images(self, image_paths):
        rgb_root = os.path.join(self.dataset_root, "RGB")
        if not os.path.isdir(rgb_root):
            raise layout_error("RGB image folder not found", rgb_root, self.layout)
        thermal_roots = [os.path.join(self.dataset_root, d) for d in self.thermal_dirs]
        thermal_root = next((d for d in thermal_roots if os.path.isdir(d)), None)
        if thermal_root is None:
            raise layout_error(
                "thermal image folder not found", " or ".join(thermal_roots), self.layout
            )
        names = [os.path.basename(p) for p in image_paths]
        rgb = [os.path.join(rgb_root, n) for n in names]
        thermal = [os.path.join(thermal_root, n) for n in names]
        check_files_exist(rgb, "RGB images", self.annotation_file, self.layout)
        check_files_exist(thermal, "thermal images", self.annotation_file, self.layout)
        return list(zip(rgb, thermal))

    def _load_subsets(self, test_records):
        subset_root = os.path.join(self.dataset_root, self.subset_dir)
        if not os.path.isdir(subset_root):
            return {}
        ids_by_name = {}
        for image_id, r in enumerate(test_records):
            ids_by_name.setdefault(r.name, []).append(image_id)
        subsets = {}
        for path in sorted(glob.glob(os.path.join(subset_root, "*.json"))):
            names = load_json(path, self.layout)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DatasetFormatError(
                    f"{path} must hold a JSON list of test image names, e.g. "
                    '["0001.jpg", "0002.jpg"]'
                )
            names = [os.path.basename(n) for n in names]
            unknown = sorted({n for n in names if n not in ids_by_name})
            if unknown:
                raise DatasetFormatError(
                    f"{path} names {len(unknown)} images that are not in the test split of "
                    f"{self.annotation_file}: {shorten(unknown)}"
                )
            stem = os.path.splitext(os.path.basename(path))[0]
            subsets[stem] = sorted({i for n in names for i in ids_by_name[n]})
        return subsets
