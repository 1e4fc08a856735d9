"""Captions of visible-infrared re-identification images, read from a JSON file made offline.

RSBA (Dong et al., IJCAI'25) aligns every training image with a description a vision-language
model wrote for it (LLaVA, prompted "Please describe the characteristics of the pedestrian in the
image"). The datasets do not ship such captions; the user produces them once and names the file
in ``DATASETS.VI_CAPTIONS``: one JSON object mapping an image path relative to the dataset folder
to its caption::

    {"Visible/3/male_back_v_00012_2.bmp": "The pedestrian in the image is a young man ...",
     "Thermal/3/male_back_t_00012_2.bmp": "..."}

Keys may start with ``./`` and use Windows backslashes; they are normalised to ``a/b/c``. A
training image without a (non-empty) caption stops training with a message naming it, unless
``DATASETS.VI_CAPTION_FALLBACK`` gives a template caption for such images. Test images need no
caption (RSBA tests on the visual side only); ``caption_coverage`` reports both splits for
``tools/check_captions.py``.
"""

import json
import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from .captions import get_tokenizer
from .datasets.text_reid import shorten
from .datasets.vi_reid import MODALITIES

logger = logging.getLogger(__name__)

__all__ = [
    "CAPTIONS_KEY",
    "FALLBACK_KEY",
    "CaptionCoverage",
    "CaptionFileError",
    "TrainingCaptions",
    "caption_coverage",
    "caption_file_path",
    "captions_for_items",
    "fill_template",
    "image_key",
    "load_training_captions",
    "missing_captions",
    "normalise_key",
    "read_caption_file",
]

CAPTIONS_KEY = "DATASETS.VI_CAPTIONS"
FALLBACK_KEY = "DATASETS.VI_CAPTION_FALLBACK"
_EXAMPLE = '{"Visible/3/male_back_v_00012_2.bmp": "The pedestrian in the image is ..."}'


class CaptionFileError(ValueError):
    """A caption file is missing or malformed, or lacks the caption of a training image.

    The message names the file (and the key or image) and says how to fix it.
    """


def normalise_key(key):
    """``key`` as a relative POSIX path: backslashes to ``/``, ``./`` and doubled ``/`` removed
    (``./Visible/3/x.bmp`` and ``Visible\\3\\x.bmp`` both give ``Visible/3/x.bmp``)."""
    key = key.strip().replace("\\", "/")
    return posixpath.normpath(key) if key else key


def image_key(path, dataset_root):
    """The caption-file key of an image: its path relative to ``dataset_root``, ``/``-separated."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(dataset_root))
    return normalise_key(rel)


def caption_file_path(value, dataset_root):
    """The caption file ``value`` names: absolute, or relative to the dataset folder."""
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.join(dataset_root, value)


class _Pairs(list):
    """(key, value) pairs of one JSON object, in file order (so repeated keys can be found)."""


def _json_kind(value):
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, _Pairs):
        return "an object"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    kinds = {str: "a string", list: "an array", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def read_caption_file(path, key=CAPTIONS_KEY):
    """The captions of a file: ``{normalised relative image path: caption}``.

    Args:
        path (str): the JSON file.
        key (str): the config key (or command-line option) that named it, for the messages.

    Raises ``CaptionFileError`` when the file is missing, is not JSON, is not one object, holds a
    value that is not a string (naming its key), or gives one image two different captions
    (keys that differ only before normalisation, e.g. ``a/b.jpg`` and ``./a\\b.jpg``).
    """
    if not os.path.isfile(path):
        off = f", or set {key} to '' (no captions)" if key.startswith("DATASETS.") else ""
        raise CaptionFileError(
            f"caption file not found: {path} (named by {key}; a relative path is taken below the "
            f"dataset folder). Write one JSON object mapping image paths relative to the dataset "
            f"folder to captions, e.g. {_EXAMPLE}{off}."
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=_Pairs)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaptionFileError(f"{path} ({key}) is not valid UTF-8 JSON: {e}") from e
    if not isinstance(data, _Pairs):
        raise CaptionFileError(
            f"{path} ({key}) holds {_json_kind(data)}, expected one JSON object "
            f"mapping image paths to captions, e.g. {_EXAMPLE}"
        )
    captions, origin = {}, {}
    for raw, caption in data:
        if not isinstance(caption, str):
            raise CaptionFileError(
                f"{path} ({key}): the value of key {raw!r} is {_json_kind(caption)}, expected "
                "the caption as a string"
            )
        rel = normalise_key(raw)
        if rel in captions and captions[rel] != caption:
            raise CaptionFileError(
                f"{path} ({key}): keys {origin[rel]!r} and {raw!r} name the same image "
                f"{rel!r} with different captions; keep one of them"
            )
        captions[rel], origin[rel] = caption, raw
    return captions


def fill_template(template, modality):
    """The fallback caption of an image: ``template`` with ``{modality}`` replaced."""
    return template.replace("{modality}", modality)


def missing_captions(items, dataset_root, captions):
    """Keys of the items without a caption: ``(missing, empty)``, in item order.

    ``missing``: no key in ``captions``; ``empty``: the caption is empty or whitespace only.
    """
    missing, empty = [], []
    for item in items:
        rel = image_key(item.path, dataset_root)
        caption = captions.get(rel)
        if caption is None:
            missing.append(rel)
        elif not caption.strip():
            empty.append(rel)
    return missing, empty


def captions_for_items(items, dataset_root, captions, fallback="", source=""):
    """One caption per training item, from ``captions`` or the fallback template.

    Args:
        items (list[VIImage]): the training images.
        dataset_root (str): the folder the keys are relative to.
        captions (dict[str, str]): ``read_caption_file``'s mapping.
        fallback (str): template caption for images without one (``{modality}`` becomes
            ``visible`` / ``infrared``); "" makes a missing caption an error.
        source (str): the caption file, for the messages.

    Returns:
        list[str]: (N,) captions, stripped, in item order.

    Raises ``CaptionFileError`` naming the first images without a caption and their number when
    any is missing or empty and no fallback is set; with a fallback their number is logged as a
    warning.
    """
    missing, empty = missing_captions(items, dataset_root, captions)
    lacking = missing + empty
    where = f"{source} ({CAPTIONS_KEY})" if source else CAPTIONS_KEY
    if lacking and not fallback.strip():
        counts = ", ".join(
            f"{n} {what}" for n, what in ((len(missing), "missing"), (len(empty), "empty")) if n
        )
        raise CaptionFileError(
            f"{where}: {len(lacking)} of {len(items)} training images have no caption "
            f"({counts}): {shorten(lacking)}. Add their captions to the file (keys are paths "
            f"relative to {dataset_root}, e.g. {lacking[0]!r}), or set {FALLBACK_KEY} to a "
            "template caption for them (e.g. 'a photo of a person'). tools/check_captions.py "
            "reports what the file covers."
        )
    if lacking:
        logger.warning(
            "%s: %d of %d training images have no caption and use the fallback %r (%s): %s",
            where,
            len(lacking),
            len(items),
            fallback,
            FALLBACK_KEY,
            shorten(lacking),
        )
    lacking = set(lacking)
    out = []
    for item in items:
        rel = image_key(item.path, dataset_root)
        text = fill_template(fallback, item.modality) if rel in lacking else captions[rel]
        out.append(text.strip())
    return out


class TrainingCaptions(NamedTuple):
    """The captions of a training list, and where they came from."""

    texts: list  # list[str], one per training item
    path: str  # the caption file read
    covered: int  # training images with their own caption (the others use the fallback)


def load_training_captions(cfg, dataset, items):
    """``TrainingCaptions`` of ``items`` from the file ``DATASETS.VI_CAPTIONS`` names.

    dataset (VIReIDDataset): the reader (its ``dataset_root`` anchors the file and the keys).
    """
    path = caption_file_path(cfg.DATASETS.VI_CAPTIONS, dataset.dataset_root)
    captions = read_caption_file(path)
    fallback = cfg.DATASETS.VI_CAPTION_FALLBACK
    texts = captions_for_items(items, dataset.dataset_root, captions, fallback, source=path)
    missing, empty = missing_captions(items, dataset.dataset_root, captions)
    return TrainingCaptions(texts, path, len(items) - len(missing) - len(empty))


# ------------------------------------------------------------------------------------ coverage
@dataclass
class CaptionCoverage:
    """What a caption file covers of a dataset (``caption_coverage``)."""

    # one row per (split, modality): {"split", "modality", "images", "captioned", "missing",
    # "empty"}; "captioned" + "missing" + "empty" = "images"
    rows: list = field(default_factory=list)
    duplicate_texts: int = 0  # distinct training captions given to more than one image
    duplicate_images: int = 0  # training images whose caption another training image shares
    largest_duplicates: list = field(default_factory=list)  # [(caption, images)], largest first
    stale: list = field(default_factory=list)  # keys of no dataset image, sorted
    # stale keys that match an image once a leading folder is dropped: {folder: keys}
    stale_prefixes: dict = field(default_factory=dict)
    token_mean: float = 0.0  # tokens (with SOT and EOT) of the training captions
    token_max: int = 0
    truncated: int = 0  # training captions longer than context_length (cut when tokenised)
    context_length: int = 77
    fallback: str = ""

    def lacking(self, split="train"):
        """Images of ``split`` without a non-empty caption."""
        return sum(r["missing"] + r["empty"] for r in self.rows if r["split"] == split)

    @property
    def ok(self):
        """Every training image has a caption of its own, or the fallback fills the rest."""
        return self.lacking("train") == 0 or bool(self.fallback.strip())


def _stale_prefixes(stale, known):
    """``{leading folder: stale keys}`` of stale keys naming a known image below one folder."""
    out = {}
    for key in stale:
        parts = key.split("/")
        for cut in range(1, len(parts)):
            if "/".join(parts[cut:]) in known:
                out.setdefault("/".join(parts[:cut]), []).append(key)
                break
    return out


def caption_coverage(dataset, captions, context_length=77, fallback="", largest=5):
    """Coverage of ``captions`` over a VI-ReID dataset's training and test images.

    Args:
        dataset (VIReIDDataset): the reader (``train``, ``test.images``, ``dataset_root``).
        captions (dict[str, str]): ``read_caption_file``'s mapping.
        context_length (int): the text length the loader tokenises to (``INPUT.TEXT.
            CONTEXT_LENGTH``).
        fallback (str): ``DATASETS.VI_CAPTION_FALLBACK`` (only decides ``ok``).
        largest (int): how many of the largest duplicate groups to keep.

    Duplicates and token lengths are taken over the training images' own captions: those are
    what the model aligns with.
    """
    root = dataset.dataset_root
    report = CaptionCoverage(context_length=context_length, fallback=fallback)
    known = set()
    train_texts = []
    for split, images in (("train", dataset.train), ("test", dataset.test.images)):
        for modality in MODALITIES:
            chosen = [i for i in images if i.modality == modality]
            missing, empty = missing_captions(chosen, root, captions)
            report.rows.append(
                {
                    "split": split,
                    "modality": modality,
                    "images": len(chosen),
                    "captioned": len(chosen) - len(missing) - len(empty),
                    "missing": len(missing),
                    "empty": len(empty),
                }
            )
        for image in images:
            rel = image_key(image.path, root)
            known.add(rel)
            text = captions.get(rel, "").strip()
            if split == "train" and text:
                train_texts.append(text)

    counts = Counter(train_texts)
    shared = sorted(((t, n) for t, n in counts.items() if n > 1), key=lambda tn: (-tn[1], tn[0]))
    report.duplicate_texts = len(shared)
    report.duplicate_images = sum(n for _, n in shared)
    report.largest_duplicates = shared[:largest]
    report.stale = sorted(set(captions) - known)
    report.stale_prefixes = _stale_prefixes(report.stale, known)

    tokenizer = get_tokenizer()
    lengths = {t: len(tokenizer.encode_bpe(t)[0]) + 2 for t in counts}  # + SOT, EOT
    per_image = [lengths[t] for t in train_texts]
    if per_image:
        report.token_mean = sum(per_image) / len(per_image)
        report.token_max = max(per_image)
        report.truncated = sum(n > context_length for n in per_image)
    return report
