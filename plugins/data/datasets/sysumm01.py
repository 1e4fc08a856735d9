"""SYSU-MM01 reader: four visible and two infrared cameras, 491 identities."""

import os

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import DatasetLayoutError, shorten
from .vi_reid import (
    VIReIDDataset,
    format_error,
    list_images,
    make_image,
    read_id_list,
    require_dir,
)

__all__ = ["SYSUMM01"]


@DATASET_REGISTRY.register()
class SYSUMM01(VIReIDDataset):
    """SYSU-MM01 (Wu et al., ICCV 2017), read from ``cam{1..6}/<pid %04d>/`` and ``exp/*_id.txt``.

    Training: the identities of ``train_id.txt`` and ``val_id.txt`` together (395 in the official
    split), relabelled 0..N-1, every image of cameras 1-6. Test: the identities of
    ``test_id.txt``, every image of cameras 1-6 (the protocol draws queries and galleries).
    Cameras 1, 2, 4, 5 are visible, 3 and 6 infrared; ``camid`` is the camera number. Test images
    are ordered by identity, camera and file name. An identity without any image, or one listed
    in both the training and the test lists, stops the reader. Registered as ``SYSUMM01``
    (fast-reid's own ``SYSU_mm`` reads another layout). See ``VIReIDDataset`` for arguments and
    attributes.
    """

    dataset_dir = "SYSU-MM01"
    dataset_name = "SYSUMM01"
    protocol = "sysumm01"
    cameras = (1, 2, 3, 4, 5, 6)
    infrared_cameras = (3, 6)
    layout = (
        "<root>/SYSU-MM01/\n"
        "  cam1/ .. cam6/<pid %04d>/<%04d>.jpg   cams 1, 2, 4, 5 visible; 3, 6 infrared\n"
        "  exp/train_id.txt, exp/val_id.txt, exp/test_id.txt\n"
        "                                        one comma-separated line of ids each, e.g. 1,2,4"
    )

    def _ids(self, split):
        return read_id_list(os.path.join(self.dataset_root, "exp", f"{split}_id.txt"), self.layout)

    def _images_of(self, pids, source):
        images = []
        for cam in self.cameras:
            require_dir(os.path.join(self.dataset_root, f"cam{cam}"), "camera folder", self.layout)
        modality = {
            c: "infrared" if c in self.infrared_cameras else "visible" for c in self.cameras
        }
        empty = []
        for pid in sorted(pids):
            found = 0
            for cam in self.cameras:
                folder = os.path.join(self.dataset_root, f"cam{cam}", f"{pid:04d}")
                for path in list_images(folder):
                    images.append(make_image(path, pid, cam, modality[cam]))
                    found += 1
            if not found:
                empty.append(pid)
        if empty:
            raise DatasetLayoutError(
                f"{len(empty)} identities listed in {source} have no image in any camera "
                f"folder: {shorten(empty)} (looked for cam1..cam6/<pid %04d>/ below "
                f"{self.dataset_root})\nExpected layout:\n{self.layout}"
            )
        return images

    def _read_train(self):
        train, val = self._ids("train"), self._ids("val")
        test = set(self._ids("test"))
        leaked = sorted(test.intersection(train + val))
        if leaked:
            raise format_error(
                f"{len(leaked)} identities are listed for both training (exp/train_id.txt, "
                f"exp/val_id.txt) and test (exp/test_id.txt): {shorten(leaked)}",
                self.layout,
            )
        return self._images_of(set(train + val), "exp/train_id.txt, exp/val_id.txt")

    def _read_test(self):
        return self._images_of(set(self._ids("test")), "exp/test_id.txt")
