"""Shared base of the visible-infrared re-identification readers (SYSU-MM01, RegDB, LLCM).

A reader lists every image of its training and test splits as ``VIImage`` (path, pid, camera,
modality) and checks that every listed file exists; it never opens an image. Training
identities are relabelled 0..N-1 with ONE mapping over both modalities, so a person has the same
label in visible and infrared images. Test images keep the dataset's own identity numbers and
come as one ``VITestSet``; the evaluation protocol decides queries and gallery draws from it.

Index files come in two shapes: id lists (one comma-separated line of integers, SYSU-MM01's
``exp/*_id.txt`` and LLCM's ``idx/test_id.txt``) and image lists (``<relative path> <label>`` per
line, RegDB's and LLCM's ``idx/*.txt``). A missing file or folder raises ``DatasetLayoutError``,
a malformed line ``DatasetFormatError``; both name the path (and line number) and show the
expected layout.
"""

import logging
import os
from collections import Counter
from typing import NamedTuple

from tabulate import tabulate
from termcolor import colored

from ..items import VIImage, VITestSet
from .text_reid import DatasetFormatError, DatasetLayoutError, layout_error, relabel, shorten

logger = logging.getLogger(__name__)

__all__ = [
    "IndexLine",
    "VIReIDDataset",
    "build_vi_dataset",
    "is_vi_dataset",
    "list_images",
    "read_id_list",
    "read_image_list",
]

MODALITIES = ("visible", "infrared")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class IndexLine(NamedTuple):
    """One line of an image list: ``<relative path> <label>``."""

    rel_path: str
    label: int
    line: int  # 1-based line number in its file


def format_error(problem, layout):
    """A ``DatasetFormatError`` with the expected layout appended."""
    return DatasetFormatError(f"{problem}\nExpected layout:\n{layout}")


def require_file(path, what, layout):
    """Raise ``DatasetLayoutError`` unless ``path`` is a file."""
    if not os.path.isfile(path):
        raise layout_error(f"{what} not found", path, layout)


def require_dir(path, what, layout):
    """Raise ``DatasetLayoutError`` unless ``path`` is a folder."""
    if not os.path.isdir(path):
        raise layout_error(f"{what} not found", path, layout)


def _lines(path):
    """The text lines of an index file; one line of error when the file holds binary bytes (a
    damaged copy, or another file under the index's name), never a decoder's traceback."""
    with open(path, "rb") as f:
        data = f.read()
    bad = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start if bad < 0 else min(bad, e.start)
    if bad >= 0:
        raise DatasetFormatError(
            f"index file {path} holds binary bytes (0x{data[bad]:02x} at byte {bad}), not "
            "text lines: it is damaged or another file under this name; copy it again from the "
            "dataset's download."
        )
    return text.splitlines()


def read_id_list(path, layout):
    """Identities of a comma-separated id file, in file order without repeats.

    The official files hold one line (``1,2,5,...``); further non-empty lines are read the same
    way. Raises ``DatasetFormatError`` naming the line of a token that is not an integer, or when
    the file holds no id.
    """
    require_file(path, "identity list", layout)
    ids = {}
    for number, line in enumerate(_lines(path), start=1):
        for token in line.split(","):
            token = token.strip()
            if not token:
                continue
            if not token.isdigit():
                raise format_error(
                    f"{path}, line {number}: {token!r} is not an identity number; expected one "
                    "comma-separated line of integers, e.g. 1,2,5",
                    layout,
                )
            ids[int(token)] = None
    if not ids:
        raise format_error(f"{path} lists no identity", layout)
    return list(ids)


def read_image_list(path, layout):
    """``IndexLine`` per non-empty line of an image list ``<relative path> <label>``.

    The label is the last whitespace-separated field, so a path may hold spaces. Raises
    ``DatasetFormatError`` naming the line that does not have that shape, or when the file is
    empty.
    """
    require_file(path, "index file", layout)
    entries = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(maxsplit=1)
        label = fields[-1]
        if len(fields) != 2 or not label.isdigit():
            raise format_error(
                f"{path}, line {number}: expected '<relative path> <integer label>', got {line!r}",
                layout,
            )
        entries.append(IndexLine(fields[0], int(label), number))
    if not entries:
        raise format_error(f"{path} lists no image", layout)
    return entries


def check_listed_files(base, entries, source, layout):
    """Absolute paths of ``entries`` below ``base``; raises naming missing files and their lines."""
    paths = [os.path.join(base, e.rel_path) for e in entries]
    missing = [f"line {e.line}: {p}" for e, p in zip(entries, paths) if not os.path.isfile(p)]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} images listed in {source} not found: {shorten(missing)}\n"
            f"Expected layout:\n{layout}"
        )
    return paths


def list_images(folder):
    """Image files directly in ``folder``, sorted by name (empty when the folder is absent)."""
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def folder_pid(rel_path):
    """Identity a path's parent folder names (``Visible/12/x.bmp`` -> 12); None if not a number."""
    parent = os.path.basename(os.path.dirname(rel_path))
    return int(parent) if parent.isdigit() else None


def check_labels_match_folders(labelled, layout):
    """Raise when one label is given to images of two identity folders (or one folder two labels).

    labelled (list[tuple[str, IndexLine]]): (index file, line) over every list that shares one
        label space (e.g. the visible and infrared training lists); lines whose parent folder is
        not a number are not checked.

    Lists labelled separately per modality would silently give a person two labels; this catches
    it before training.
    """
    by_label, by_folder = {}, {}
    for source, entry in labelled:
        pid = folder_pid(entry.rel_path)
        if pid is None:
            continue
        where = f"{source}, line {entry.line}"
        for table, key, value, what in (
            (by_label, entry.label, pid, "label"),
            (by_folder, pid, entry.label, "identity folder"),
        ):
            seen = table.setdefault(key, (value, where))
            if seen[0] != value:
                raise format_error(
                    f"{what} {key} is used for two {'folders' if what == 'label' else 'labels'}: "
                    f"{seen[0]} ({seen[1]}) and {value} ({where}); the lists must give a person "
                    "one label in both modalities",
                    layout,
                )


def relabel_train(images):
    """``images`` with pids relabelled 0..N-1 (in increasing order of the original id), and the map.

    One mapping serves both modalities: a person keeps one label.
    """
    pid_map = relabel(image.pid for image in images)
    return [image._replace(pid=pid_map[image.pid]) for image in images], pid_map


def split_counts(images):
    """``{"ids", "visible", "infrared", "visible_ids", "infrared_ids", "cameras"}`` of a list."""
    counts = Counter(image.modality for image in images)
    out = {"ids": len({image.pid for image in images})}
    for modality in MODALITIES:
        out[modality] = counts.get(modality, 0)
        out[f"{modality}_ids"] = len({i.pid for i in images if i.modality == modality})
    out["cameras"] = sorted({image.camid for image in images})
    return out


class VIReIDDataset:
    """Base reader: subclasses implement ``_read_train`` and ``_read_test``.

    Args:
        root (str): the datasets folder (``FASTREID_DATASETS``); the dataset lives in
            ``<root>/<dataset_dir>``.
        verbose (bool): log a one-line summary after reading.
        kwargs: ignored (loaders pass every reader the same arguments).

    Attributes:
        train (list[VIImage]): training images of both modalities, pids relabelled 0..N-1.
        test (VITestSet): every test image once, pids as in the dataset.
        num_train_pids (int): training identities.
        train_pid_map (dict[int, int]): the dataset's identity -> training label.
    """

    dataset_dir = ""  # folder below ``root``
    dataset_name = ""  # registry name
    protocol = ""  # VITestSet.protocol
    layout = ""  # short tree of the expected layout, shown in error messages

    def __init__(self, root="datasets", verbose=True, **kwargs):
        self.root = root
        self.name = self.dataset_name
        self.dataset_root = os.path.join(root, self.dataset_dir)
        require_dir(self.dataset_root, f"{self.dataset_name} folder", self.layout)
        train = self._read_train()
        self.train, self.train_pid_map = relabel_train(train)
        self.num_train_pids = len(self.train_pid_map)
        self.test = VITestSet(images=tuple(self._read_test()), protocol=self.protocol)
        for split, images in (("train", self.train), ("test", self.test.images)):
            self._warn_single_modality(split, images)
        if verbose:
            logger.info("%s: %s", self.name, self.summary())

    def _read_train(self):
        """Training ``VIImage``s with the dataset's identity numbers (relabelled afterwards)."""
        raise NotImplementedError

    def _read_test(self):
        """Test ``VIImage``s in a fixed order (position = index in ``VITestSet.images``)."""
        raise NotImplementedError

    def _warn_single_modality(self, split, images):
        by_pid = {}
        for image in images:
            by_pid.setdefault(image.pid, set()).add(image.modality)
        single = sorted(pid for pid, mods in by_pid.items() if len(mods) < 2)
        if single:
            logger.warning(
                "%s %s: %d identities have images of one modality only: %s",
                self.name,
                split,
                len(single),
                shorten(single),
            )

    # ----------------------------------------------------------------------------- reporting
    def split_counts(self):
        """``{"train": counts, "test": counts}`` (see ``split_counts``)."""
        return {"train": split_counts(self.train), "test": split_counts(self.test.images)}

    def summary(self):
        """One line: ids / visible / infrared images per split."""
        parts = []
        for split, c in self.split_counts().items():
            parts.append(
                f"{split} {c['ids']} ids / {c['visible']} visible / {c['infrared']} infrared"
            )
        return "; ".join(parts)

    def _log_table(self, splits):
        counts = self.split_counts()
        rows = [
            [s, counts[s]["ids"], counts[s]["visible"], counts[s]["infrared"],
             ",".join(map(str, counts[s]["cameras"]))]
            for s in splits
        ]  # fmt: skip
        table = tabulate(
            rows,
            tablefmt="pipe",
            headers=["subset", "# ids", "# visible", "# infrared", "cameras"],
            numalign="left",
        )
        logger.info(f"=> Loaded {self.name}: \n" + colored(table, "cyan"))

    def show_train(self):
        """Log the training split's counts as a table."""
        self._log_table(["train"])

    def show_test(self):
        """Log the test split's counts as a table."""
        self._log_table(["test"])


def is_vi_dataset(name):
    """True when ``name`` is a registered VI-ReID reader."""
    from fastreid.data.datasets import DATASET_REGISTRY

    cls = DATASET_REGISTRY.get(name)
    return isinstance(cls, type) and issubclass(cls, VIReIDDataset)


def build_vi_dataset(cfg, name, verbose=True):
    """Construct a registered VI-ReID reader by name (RegDB: split ``DATASETS.REGDB_TRIAL``)."""
    from fastreid.data.datasets import DATASET_REGISTRY

    from ..build import datasets_root

    return DATASET_REGISTRY.get(name)(
        root=datasets_root(), trial=cfg.DATASETS.REGDB_TRIAL, verbose=verbose
    )


def make_image(path, pid, camid, modality):
    """A ``VIImage`` (absolute path)."""
    return VIImage(path=os.path.abspath(path), pid=int(pid), camid=int(camid), modality=modality)
