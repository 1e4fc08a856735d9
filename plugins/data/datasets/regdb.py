"""RegDB reader: one visible and one thermal camera, 412 identities, ten train/test splits."""

import os

from fastreid.data.datasets import DATASET_REGISTRY

from .text_reid import shorten
from .vi_reid import (
    VIReIDDataset,
    check_labels_match_folders,
    check_listed_files,
    folder_pid,
    format_error,
    make_image,
    read_image_list,
    require_dir,
)

__all__ = ["RegDB"]

# RegDB's camera numbers: one camera per modality.
VISIBLE_CAM, THERMAL_CAM = 1, 2


@DATASET_REGISTRY.register()
class RegDB(VIReIDDataset):
    """RegDB (Nguyen et al., Sensors 2017), one of its ten train/test splits (``trial``).

    Lists: ``idx/{train,test}_{visible,thermal}_<trial>.txt``, lines ``<path relative to RegDB/>
    <label>``. Training: the two training lists,
    their labels relabelled 0..N-1 with one mapping (the visible and thermal images of a person
    share a label in the official lists; a label given to two identity folders, or one folder
    given two labels, stops the reader). Test: the two test lists in file order, visible first,
    with the list's label as ``pid``. ``camid`` is 1 for visible and 2 for thermal; thermal images
    have modality ``"infrared"``.

    Args:
        trial (int): the split, 1-10 (config ``DATASETS.REGDB_TRIAL``).
        root, verbose: see ``VIReIDDataset``.
    """

    dataset_dir = "RegDB"
    dataset_name = "RegDB"
    protocol = "regdb"
    layout = (
        "<root>/RegDB/\n"
        "  Visible/<pid>/<name>.bmp\n"
        "  Thermal/<pid>/<name>.bmp\n"
        "  idx/train_visible_<t>.txt, idx/train_thermal_<t>.txt,\n"
        "  idx/test_visible_<t>.txt, idx/test_thermal_<t>.txt   (t = 1..10)\n"
        "      one image per line: '<path relative to RegDB/> <label>',"
        " e.g. 'Visible/1/male_front_v_00007_1.bmp 0'"
    )

    def __init__(self, root="datasets", trial=1, verbose=True, **kwargs):
        if isinstance(trial, bool) or not isinstance(trial, int) or not 1 <= trial <= 10:
            raise ValueError(
                f"RegDB trial must be an integer 1-10 (DATASETS.REGDB_TRIAL), got {trial!r}"
            )
        self.trial = trial
        super().__init__(root=root, verbose=verbose, **kwargs)

    def _list(self, split, modality):
        rel = f"idx/{split}_{modality}_{self.trial}.txt"
        return rel, read_image_list(os.path.join(self.dataset_root, rel), self.layout)

    def _read_split(self, split):
        for folder in ("Visible", "Thermal"):
            require_dir(os.path.join(self.dataset_root, folder), "image folder", self.layout)
        images, labelled = [], []
        for modality, cam, kind in (
            ("visible", VISIBLE_CAM, "visible"),
            ("thermal", THERMAL_CAM, "infrared"),
        ):
            rel, entries = self._list(split, modality)
            paths = check_listed_files(self.dataset_root, entries, rel, self.layout)
            images.extend(make_image(p, e.label, cam, kind) for p, e in zip(paths, entries))
            labelled.extend((rel, e) for e in entries)
        check_labels_match_folders(labelled, self.layout)
        return images

    def _read_train(self):
        return self._read_split("train")

    def _read_test(self):
        test = self._read_split("test")
        # Labels of the training and test lists live in different spaces; paths and identity
        # folders do not.
        shared = sorted({i.path for i in test} & {i.path for i in self.train})
        folders = {folder_pid(i.path) for i in self.train} - {None}
        shared += [f"identity {p}" for p in sorted({folder_pid(i.path) for i in test} & folders)]
        if shared:
            raise format_error(
                f"split {self.trial}: the training and test lists share {shorten(shared)}",
                self.layout,
            )
        return test
