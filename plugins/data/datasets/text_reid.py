"""Shared reader for caption-annotated person retrieval datasets (the CUHK-PEDES record family).

CUHK-PEDES, ICFG-PEDES, RSTPReid and RGBT-PEDES all ship one JSON list of records
``{"split", "captions", <image key>, "id"}`` next to an image folder. ``TextReIDDataset`` reads
such a file once, checks every referenced image, skips (and counts) empty captions and builds:

- ``train``: one ``CaptionItem`` per caption, identities relabelled 0..N-1 in order of the
  original id, ``image_id`` = index of the image among the training images that have captions;
- ``val`` / ``test``: ``RetrievalSplit`` with every image of the split in the gallery (original
  ids), one ``QueryCaption`` per non-empty caption and optional named subsets.

A dataset file only declares its folder, annotation file names, image key and layout; RGBT-PEDES
also overrides how images are found and where subsets come from.
"""

import json
import logging
import os
from typing import NamedTuple

from tabulate import tabulate
from termcolor import colored

from ..items import CaptionItem, GalleryImage, QueryCaption, RetrievalSplit

logger = logging.getLogger(__name__)

# How many offending paths or names an error message lists before it only counts the rest.
_SHOWN = 5


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder, annotation file or image is missing.

    The message names the missing path and shows the layout the reader expects.
    """


class DatasetFormatError(ValueError):
    """An annotation or subset file exists but does not hold what the reader expects."""


class ImageRecord(NamedTuple):
    """One image (or RGB + thermal pair) of a split, as read from the annotation file."""

    img_path: str  # RGB image, absolute or relative to the working directory
    pid: int  # original identity
    name: str  # file basename, used by subset lists
    captions: tuple  # non-empty captions, stripped
    no_color_captions: tuple  # parallel to ``captions``; "" where the dataset has none
    t_path: str = ""  # thermal image of an RGBT pair
    num_empty: int = 0  # empty captions skipped for this image


def layout_error(problem, path, layout):
    """A ``DatasetLayoutError`` saying what is missing at ``path`` and the expected layout."""
    return DatasetLayoutError(f"{problem}: {path}\nExpected layout:\n{layout}")


def load_json(path, layout):
    """Parsed content of the JSON file ``path``; a clear error if it is missing or malformed."""
    if not os.path.isfile(path):
        raise layout_error("annotation file not found", path, layout)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} is not valid JSON: {e}") from e


def shorten(names):
    """``names`` joined for an error message, at most ``_SHOWN`` of them."""
    names = list(names)
    shown = ", ".join(str(n) for n in names[:_SHOWN])
    if len(names) > _SHOWN:
        shown += f", ... ({len(names) - _SHOWN} more)"
    return shown


def check_files_exist(paths, what, source, layout):
    """Raise ``DatasetLayoutError`` listing every path of ``paths`` that is not a file."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} {what} listed in {source} not found: {shorten(missing)}\n"
            f"Expected layout:\n{layout}"
        )


def split_captions(captions, no_color):
    """Non-empty captions and their parallel colour-free captions, plus the number skipped.

    Args:
        captions (list[str]): a record's captions.
        no_color (list[str]): the parallel colour-free captions; shorter lists read as "".
    """
    kept, kept_no_color, empty = [], [], 0
    for i, caption in enumerate(captions):
        if not caption.strip():
            empty += 1
            continue
        kept.append(caption.strip())
        kept_no_color.append(no_color[i].strip() if i < len(no_color) else "")
    return tuple(kept), tuple(kept_no_color), empty


def relabel(pids):
    """Map original identities to 0..N-1 in increasing order of the original id."""
    return {pid: label for label, pid in enumerate(sorted(set(pids)))}


def build_train(records):
    """Training items, one per caption, and the original-to-training identity map.

    Images without a non-empty caption contribute nothing and take no ``image_id``, so image ids
    and identities are both contiguous over what training actually sees.
    """
    with_captions = [r for r in records if r.captions]
    pid_map = relabel(r.pid for r in with_captions)
    items = []
    for image_id, r in enumerate(with_captions):
        for caption, no_color in zip(r.captions, r.no_color_captions):
            items.append(
                CaptionItem(
                    img_path=r.img_path,
                    pid=pid_map[r.pid],
                    camid=0,
                    image_id=image_id,
                    caption=caption,
                    no_color_caption=no_color,
                    t_path=r.t_path,
                )
            )
    return items, pid_map


def build_retrieval_split(records, subsets=None):
    """A ``RetrievalSplit``: every record is a gallery entry, every caption a query.

    Args:
        records (list[ImageRecord]): the split's images in file order.
        subsets (dict[str, list[int]] | None): subset name -> gallery image ids.
    """
    images, captions = [], []
    for image_id, r in enumerate(records):
        images.append(
            GalleryImage(
                img_path=r.img_path,
                pid=r.pid,
                camid=0,
                image_id=image_id,
                t_path=r.t_path,
                name=r.name,
            )
        )
        for caption, no_color in zip(r.captions, r.no_color_captions):
            captions.append(QueryCaption(caption, r.pid, image_id, no_color))
    return RetrievalSplit(captions=captions, images=images, subsets=dict(subsets or {}))


def split_counts(split):
    """(# ids, # images, # captions) of a ``RetrievalSplit``."""
    return len({g.pid for g in split.images}), len(split.images), len(split.captions)


def subset_counts(split, image_ids):
    """(# ids, # images, # captions) of the subset ``image_ids`` of ``split``."""
    chosen = set(image_ids)
    pids = {split.images[i].pid for i in chosen}
    num_captions = sum(1 for c in split.captions if c.image_id in chosen)
    return len(pids), len(chosen), num_captions


class TextReIDDataset:
    """Base reader for one JSON list of caption records plus an image folder.

    Subclasses set the class attributes below and, where images are not ``<image_dir>/<path>``,
    override ``_resolve_images``; subsets come from ``_load_subsets``.

    Args:
        root (str): the datasets folder (``FASTREID_DATASETS``); the dataset lives in
            ``<root>/<dataset_dir>``.
        caption_file (str): annotation file to read instead of the default, relative to the
            dataset folder or absolute.
        verbose (bool): log a one-line summary of the splits after reading.

    Attributes:
        train (list[CaptionItem]): one item per non-empty training caption.
        val (RetrievalSplit | None): the validation split, None where the dataset has none.
        test (RetrievalSplit): the test split.
        num_train_pids (int): training identities (labels 0..num_train_pids-1).
        num_train_images (int): training images (pairs) that have captions (image ids 0..n-1).
        train_pid_map (dict[int, int]): original identity -> training label.
        records (dict[str, list[ImageRecord]]): every image of every split, in file order.
        empty_captions (dict[str, int]): empty captions skipped per split.
        num_empty_captions (int): empty captions skipped in total.
        annotation_file (str): the annotation file that was read.
    """

    dataset_dir = ""  # folder below ``root``
    dataset_name = ""  # registry name
    annotation_files = ()  # default annotation file names, first existing one wins
    image_key = "file_path"  # record field holding the image path
    image_dir = "imgs"  # folder below the dataset folder that image paths are relative to
    splits = ("train", "test")  # splits the annotation file must contain
    has_no_color = False  # records carry a parallel ``no_color_caption`` list
    image_noun = "images"  # how ``show_*`` tables name gallery entries
    layout = ""  # short tree of the expected layout, shown in error messages

    def __init__(self, root="datasets", caption_file="", verbose=True, **kwargs):
        self.root = root
        self.name = self.dataset_name
        self.dataset_root = os.path.join(root, self.dataset_dir)
        self.verbose = verbose
        if not os.path.isdir(self.dataset_root):
            raise layout_error(
                f"{self.dataset_name} folder not found", self.dataset_root, self.layout
            )
        self.annotation_file = self._find_annotation_file(caption_file)
        self.records = self._read_records(load_json(self.annotation_file, self.layout))

        self.empty_captions = {
            split: sum(r.num_empty for r in records) for split, records in self.records.items()
        }
        self.num_empty_captions = sum(self.empty_captions.values())
        if self.num_empty_captions:
            logger.warning(
                "skipped %d empty captions in %s (%s)",
                self.num_empty_captions,
                self.annotation_file,
                ", ".join(f"{s}: {n}" for s, n in self.empty_captions.items() if n),
            )

        self.train, self.train_pid_map = build_train(self.records["train"])
        self.num_train_pids = len(self.train_pid_map)
        self.num_train_images = sum(1 for r in self.records["train"] if r.captions)
        if self.num_train_images < len(self.records["train"]):
            logger.warning(
                "%d training images of %s have only empty captions and give no training items",
                len(self.records["train"]) - self.num_train_images,
                self.annotation_file,
            )
        self.val = build_retrieval_split(self.records["val"]) if "val" in self.records else None
        self.test = build_retrieval_split(
            self.records["test"], self._load_subsets(self.records["test"])
        )
        if verbose:
            logger.info("%s: %s", self.name, self.summary())

    # ----------------------------------------------------------------------------- reading
    def _find_annotation_file(self, caption_file):
        if caption_file:
            path = caption_file
            if not os.path.isabs(path):
                path = os.path.join(self.dataset_root, path)
            if not os.path.isfile(path):
                raise layout_error("caption file not found", path, self.layout)
            return path
        candidates = [os.path.join(self.dataset_root, f) for f in self.annotation_files]
        for path in candidates:
            if os.path.isfile(path):
                return path
        problem = "annotation file not found"
        if len(candidates) > 1:
            names = " or ".join(self.annotation_files)
            problem = f"annotation file not found (looked for {names})"
        raise layout_error(problem, candidates[0], self.layout)

    def _field(self, record, index, key):
        if key not in record:
            raise DatasetFormatError(
                f"{self.annotation_file}: record {index} has no '{key}' field "
                f"(fields: {', '.join(sorted(record))})"
            )
        return record[key]

    def _string_list(self, record, index, key):
        value = self._field(record, index, key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DatasetFormatError(
                f"{self.annotation_file}: record {index} field '{key}' must be a list of "
                f"strings, got {value!r}"
            )
        return value

    def _pid(self, record, index):
        value = self._field(record, index, "id")
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DatasetFormatError(
                f"{self.annotation_file}: record {index} has id {value!r}; expected an integer"
            )
        return value

    def _read_records(self, raw):
        """Parse and check every record; returns split -> list of ``ImageRecord``."""
        if not isinstance(raw, list):
            raise DatasetFormatError(
                f"{self.annotation_file} must hold a JSON list of records, got {type(raw).__name__}"
            )
        parsed = {split: [] for split in self.splits}
        for index, record in enumerate(raw):
            if not isinstance(record, dict):
                raise DatasetFormatError(
                    f"{self.annotation_file}: record {index} is not an object: {record!r}"
                )
            split = self._field(record, index, "split")
            if split not in parsed:
                raise DatasetFormatError(
                    f"{self.annotation_file}: record {index} has split {split!r}; "
                    f"{self.dataset_name} has splits {', '.join(self.splits)}"
                )
            image = self._field(record, index, self.image_key)
            if not isinstance(image, str) or not image:
                raise DatasetFormatError(
                    f"{self.annotation_file}: record {index} field '{self.image_key}' must be "
                    f"a non-empty path, got {image!r}"
                )
            captions = self._string_list(record, index, "captions")
            no_color = []
            if self.has_no_color and record.get("no_color_caption") is not None:
                no_color = self._string_list(record, index, "no_color_caption")
            kept, kept_no_color, empty = split_captions(captions, no_color)
            parsed[split].append((image, self._pid(record, index), kept, kept_no_color, empty))

        for split, entries in parsed.items():
            if not entries:
                raise DatasetFormatError(
                    f"{self.annotation_file} has no records with split '{split}'"
                )

        all_entries = [e for entries in parsed.values() for e in entries]
        resolved = iter(self._resolve_images([e[0] for e in all_entries]))
        records = {}
        for split, entries in parsed.items():
            records[split] = []
            for image, pid, kept, kept_no_color, empty in entries:
                img_path, t_path = next(resolved)
                records[split].append(
                    ImageRecord(
                        img_path=img_path,
                        pid=pid,
                        name=os.path.basename(image),
                        captions=kept,
                        no_color_captions=kept_no_color,
                        t_path=t_path,
                        num_empty=empty,
                    )
                )
            self._warn_duplicates(split, records[split])
        return records

    def _warn_duplicates(self, split, records):
        seen, duplicates = set(), []
        for r in records:
            key = (r.img_path, r.t_path)
            if key in seen:
                duplicates.append(r.img_path)
            seen.add(key)
        if duplicates:
            logger.warning(
                "%s: %d images appear more than once in split '%s'; each record stays a "
                "separate gallery entry: %s",
                self.annotation_file,
                len(duplicates),
                split,
                shorten(duplicates),
            )

    def _resolve_images(self, image_paths):
        """(RGB path, thermal path) per annotation image path; checks that every file exists."""
        image_root = os.path.join(self.dataset_root, self.image_dir)
        if not os.path.isdir(image_root):
            raise layout_error("image folder not found", image_root, self.layout)
        paths = [os.path.join(image_root, p) for p in image_paths]
        check_files_exist(paths, "images", self.annotation_file, self.layout)
        return [(p, "") for p in paths]

    def _load_subsets(self, test_records):
        """Subset name -> test gallery image ids; none by default."""
        return {}

    # ----------------------------------------------------------------------------- reporting
    def summary(self):
        """One line of counts per split: ids / images / captions."""
        parts = [
            f"train {self.num_train_pids} ids / {self.num_train_images} {self.image_noun} / "
            f"{len(self.train)} captions"
        ]
        for split_name, split in (("val", self.val), ("test", self.test)):
            if split is not None:
                ids, images, captions = split_counts(split)
                parts.append(
                    f"{split_name} {ids} ids / {images} {self.image_noun} / {captions} captions"
                )
        return "; ".join(parts)

    def _log_table(self, rows):
        table = tabulate(
            rows,
            tablefmt="pipe",
            headers=["subset", "# ids", f"# {self.image_noun}", "# captions"],
            numalign="left",
        )
        logger.info(f"=> Loaded {self.name} in csv format: \n" + colored(table, "cyan"))

    def show_train(self):
        """Log the training split's counts as a table."""
        self._log_table([["train", self.num_train_pids, self.num_train_images, len(self.train)]])

    def show_test(self):
        """Log the val (if any), test and test-subset counts as a table."""
        rows = []
        if self.val is not None:
            rows.append(["val", *split_counts(self.val)])
        rows.append(["test", *split_counts(self.test)])
        for name, image_ids in self.test.subsets.items():
            rows.append([f"test/{name}", *subset_counts(self.test, image_ids)])
        self._log_table(rows)
