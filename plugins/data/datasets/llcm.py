"""LLCM reader: low-light cross-modality benchmark, nine visible / eight near-infrared cameras."""

import os
import re

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import DatasetLayoutError, shorten
from .vi_reid import (
    VIReIDDataset,
    check_labels_match_folders,
    check_listed_files,
    folder_pid,
    format_error,
    list_images,
    make_image,
    read_id_list,
    read_image_list,
    require_dir,
)

__all__ = ["LLCM"]

# ``<pid>_c<camera>_s<sequence>_f<frame>_<vis|nir>.jpg``: identity and camera from the name.
_NAME = re.compile(r"^(\d+)_c(\d+)_")
_CAM_DIR = re.compile(r"^cam(\d+)$")


@DATASET_REGISTRY.register()
class LLCM(VIReIDDataset):
    """LLCM (Zhang and Wang, CVPR 2023), read from ``idx/`` lists and ``test_{vis,nir}/`` folders.

    Training: ``idx/train_vis.txt`` (visible) and ``idx/train_nir.txt`` (near-infrared, modality
    ``"infrared"``), lines ``<path relative to LLCM/> <label>``; the labels of both lists are
    relabelled 0..N-1 with ONE mapping, so a person has one label in both modalities (a label
    given to two identity folders stops the reader). Test: the identities of ``idx/test_id.txt``
    (one comma-separated line), every image of ``test_vis/cam<k>/<pid %04d>/`` then of
    ``test_nir/cam<k>/<pid %04d>/``, ordered by identity, camera and file name, with the
    dataset's identity number as ``pid``. ``camid`` is the ``c<k>`` of the file name (1-9), which
    must agree with the ``cam<k>`` folder of a test image. See ``VIReIDDataset`` for arguments.
    """

    dataset_dir = "LLCM"
    dataset_name = "LLCM"
    protocol = "llcm"
    layout = (
        "<root>/LLCM/\n"
        "  idx/train_vis.txt, idx/train_nir.txt   '<path relative to LLCM/> <label>' per line,\n"
        "      e.g. 'nir/0001/0001_c01_s185535_f7010_nir.jpg 0'\n"
        "  idx/test_id.txt                      one comma-separated line of test ids\n"
        "  vis/<pid %04d>/, nir/<pid %04d>/     training images\n"
        "  test_vis/cam<k>/<pid %04d>/<pid %04d>_c<k %02d>_s<seq>_f<frame>_vis.jpg\n"
        "  test_nir/cam<k>/<pid %04d>/..._nir.jpg"
    )

    def _camera(self, name, where):
        match = _NAME.match(os.path.basename(name))
        if match is None:
            raise format_error(
                f"{where}: file name {os.path.basename(name)!r} does not start with "
                "'<pid>_c<camera>_' (e.g. 0001_c01_s185535_f7010_nir.jpg)",
                self.layout,
            )
        return int(match.group(1)), int(match.group(2))

    def _read_train(self):
        images, labelled = [], []
        for list_name, modality in (("train_vis", "visible"), ("train_nir", "infrared")):
            rel = f"idx/{list_name}.txt"
            entries = read_image_list(os.path.join(self.dataset_root, rel), self.layout)
            paths = check_listed_files(self.dataset_root, entries, rel, self.layout)
            for path, e in zip(paths, entries):
                _, cam = self._camera(e.rel_path, f"{rel}, line {e.line}")
                images.append(make_image(path, e.label, cam, modality))
            labelled.extend((rel, e) for e in entries)
        check_labels_match_folders(labelled, self.layout)
        return images

    def _camera_dirs(self, folder):
        """(camera, path) of the ``cam<k>`` folders of ``folder``, by camera number."""
        require_dir(folder, "test image folder", self.layout)
        cams = []
        for name in os.listdir(folder):
            match = _CAM_DIR.match(name)
            if match and os.path.isdir(os.path.join(folder, name)):
                cams.append((int(match.group(1)), os.path.join(folder, name)))
        if not cams:
            raise DatasetLayoutError(
                f"no cam<k> folder in {folder}\nExpected layout:\n{self.layout}"
            )
        return sorted(cams)

    def _read_test(self):
        ids = read_id_list(os.path.join(self.dataset_root, "idx", "test_id.txt"), self.layout)
        # Training labels are 0-based and test ids 1-based in the official files, so labels
        # cannot be compared; the identity folders of training images can.
        train_folders = {folder_pid(image.path) for image in self.train}
        leaked = sorted(train_folders.intersection(ids))
        if leaked:
            raise format_error(
                f"{len(leaked)} identities of idx/test_id.txt also have training images: "
                f"{shorten(leaked)}",
                self.layout,
            )
        images, found = [], set()
        for folder, modality in (("test_vis", "visible"), ("test_nir", "infrared")):
            cam_dirs = self._camera_dirs(os.path.join(self.dataset_root, folder))
            for pid in sorted(ids):
                for cam, cam_dir in cam_dirs:
                    for path in list_images(os.path.join(cam_dir, f"{pid:04d}")):
                        name_pid, name_cam = self._camera(path, path)
                        if name_cam != cam or name_pid != pid:
                            raise format_error(
                                f"{path}: the file name says identity {name_pid}, camera "
                                f"{name_cam}; its folders say identity {pid}, camera {cam}",
                                self.layout,
                            )
                        images.append(make_image(path, pid, cam, modality))
                        found.add(pid)
        empty = [pid for pid in ids if pid not in found]
        if empty:
            raise DatasetLayoutError(
                f"{len(empty)} identities of idx/test_id.txt have no image under "
                f"test_vis/cam<k>/<pid %04d>/ or test_nir/cam<k>/<pid %04d>/: {shorten(empty)}\n"
                f"Expected layout:\n{self.layout}"
            )
        return images
