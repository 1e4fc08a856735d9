"""Gallery listing for text search: a folder of person crops, RGB + thermal pairs, or a dataset split.

Three kinds of gallery are understood:

- a folder of images, searched recursively (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, any case),
  following symbolic links but visiting each real folder and listing each real file once;
- a folder holding ``RGB/`` and ``T/`` (or ``TGray/``) with the same relative file names: one
  RGB + thermal pair per RGB file (RGBT-PEDES' own layout);
- ``dataset:NAME[:split]``: the gallery images of a registered caption dataset's ``test``
  (default) or ``val`` split, identities kept (read from ``FASTREID_DATASETS``).

Items are listed in a fixed order (sorted relative paths, or the dataset's file order), so an
index row always names the same file.
"""

import os
from typing import NamedTuple

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
THERMAL_DIRS = ("T", "TGray")
DATASET_PREFIX = "dataset:"
DATASET_SPLITS = ("test", "val")


class SearchError(ValueError):
    """A user-facing refusal of the search tools; ``str(e)`` is one line saying how to fix it.

    Defined in this module, the lowest of the package, so that every module can raise it;
    ``plugins.search.engine`` re-exports it.
    """


class GalleryError(SearchError):
    """A gallery folder or dataset split is missing, empty or inconsistent."""


class GalleryItem(NamedTuple):
    """One gallery entry: an image, or an RGB + thermal pair."""

    path: str  # absolute path of the RGB (or only) image
    t_path: str = ""  # thermal image of an RGB + thermal pair, "" otherwise
    pid: int = -1  # identity when the gallery has them (a dataset split), -1 otherwise
    name: str = ""  # display name: path relative to the gallery folder (or the dataset's name)


def one_line(message):
    """``message`` with its lines joined by ``; `` (for errors that list a layout)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_index_folder(path):
    """Whether ``path`` holds a search index (``tools/build_index.py`` writes these two)."""
    return all(os.path.isfile(os.path.join(path, n)) for n in ("identity.json", "index.faiss"))


def find_images(folder, exclude=()):
    """Relative paths (``/``-separated, sorted) of every image below ``folder``, recursively.

    Symbolic links are followed, but each real folder is visited once (its device and inode
    are remembered: a link to a folder above, ``ln -s ../ loop``, ends the descent instead of
    repeating the folder 40 times) and each real file is listed once, under the first of its
    names in sorted order (a file reached through two links is one gallery item). Hidden files
    and folders (``.name``), search index folders and the folders in ``exclude`` (real paths)
    are skipped: an index written inside its own gallery is never indexed with it.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    visited, found = set(), []

    def walk(directory, rel_dir):
        try:
            info = os.stat(directory)
        except OSError:
            return
        key = (info.st_dev, info.st_ino)
        if key in visited:
            return
        visited.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = entry.name if not rel_dir else f"{rel_dir}/{entry.name}"
            try:
                is_dir = entry.is_dir()  # follows symbolic links
            except OSError:
                continue
            if is_dir:
                subdirs.append((entry.path, rel))
            elif is_image_file(entry.name):
                try:
                    if entry.is_file():
                        found.append((rel, entry.path))
                except OSError:
                    continue
        for path, rel in subdirs:
            real = os.path.realpath(path)
            if real in excluded or is_index_folder(real):
                continue
            walk(path, rel)

    walk(folder, "")
    listed, seen = [], set()
    for rel, path in sorted(found):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            listed.append(rel)
    return listed


def thermal_folder(folder):
    """``folder/T`` or ``folder/TGray`` when ``folder`` also holds ``RGB/``; None otherwise."""
    if not os.path.isdir(os.path.join(folder, "RGB")):
        return None
    for name in THERMAL_DIRS:
        if os.path.isdir(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def list_folder(folder, exclude=()):
    """Items of an image folder, or of a pair folder (``RGB/`` + ``T/`` or ``TGray/``);
    ``exclude``: folders below it that are not searched (``find_images``)."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise GalleryError(
            f"gallery folder {folder} does not exist: pass a folder of person images, a folder "
            "holding RGB/ and T/, or dataset:NAME[:split]."
        )
    t_root = thermal_folder(folder)
    if t_root is None:
        names = find_images(folder, exclude)
        if not names:
            raise GalleryError(
                f"gallery folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}, "
                "searched recursively): point --gallery at the folder of person crops."
            )
        return [GalleryItem(os.path.join(folder, n), "", -1, n) for n in names]
    rgb_root = os.path.join(folder, "RGB")
    names = find_images(rgb_root, exclude)
    if not names:
        raise GalleryError(
            f"gallery folder {folder} is a pair folder (it holds RGB/ and "
            f"{os.path.basename(t_root)}/) but RGB/ holds no images: put the RGB crops in RGB/ "
            "and the thermal ones, with the same file names, beside it."
        )
    missing = [n for n in names if not os.path.isfile(os.path.join(t_root, n))]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f", ... ({len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise GalleryError(
            f"{len(missing)} of the {len(names)} RGB images in {rgb_root} have no thermal image "
            f"of the same name in {t_root} ({shown}): every pair needs both images."
        )
    return [GalleryItem(os.path.join(rgb_root, n), os.path.join(t_root, n), -1, n) for n in names]


def parse_dataset_gallery(gallery):
    """``dataset:NAME[:split]`` -> (NAME, split)."""
    parts = gallery[len(DATASET_PREFIX) :].split(":")
    name = parts[0].strip()
    split = parts[1].strip() if len(parts) > 1 else "test"
    if not name or len(parts) > 2 or split not in DATASET_SPLITS:
        raise GalleryError(
            f"--gallery {gallery!r}: expected dataset:NAME or dataset:NAME:split with split "
            f"{' or '.join(DATASET_SPLITS)} (e.g. dataset:CUHKPEDES:test)."
        )
    return name, split


def caption_dataset_names():
    """Registry names of every caption dataset reader (``TextReIDDataset`` subclasses)."""
    from plugins.data.datasets import TextReIDDataset

    names, pending = set(), list(TextReIDDataset.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.dataset_name:
            names.add(cls.dataset_name)
    return sorted(names)


def list_dataset(gallery, cfg=None):
    """Gallery items (pids kept) of ``dataset:NAME[:split]``; ``cfg`` gives
    ``DATASETS.CAPTION_FILE`` (none: the dataset's default annotation file)."""
    from fastreid.data.datasets import DATASET_REGISTRY

    from plugins.data.build import datasets_root, is_text_dataset
    from plugins.data.datasets import DatasetFormatError, DatasetLayoutError

    name, split = parse_dataset_gallery(gallery)
    try:
        known = is_text_dataset(name)
    except KeyError:
        known = False
    if not known:
        raise GalleryError(
            f"--gallery {gallery!r}: {name} is not a registered caption dataset; known: "
            f"{', '.join(caption_dataset_names())}."
        )
    caption_file = cfg.DATASETS.CAPTION_FILE if cfg is not None else ""
    try:
        data = DATASET_REGISTRY.get(name)(
            root=datasets_root(), caption_file=caption_file, verbose=False
        )
    except (DatasetLayoutError, DatasetFormatError) as e:
        raise GalleryError(f"--gallery {gallery}: {one_line(e)}") from e
    chosen = getattr(data, split)
    if chosen is None:
        raise GalleryError(f"--gallery {gallery}: {name} has no {split} split; use test.")
    if not chosen.images:
        raise GalleryError(f"--gallery {gallery}: the {split} split of {name} has no images.")
    image_root = os.path.abspath(os.path.join(data.dataset_root, data.image_dir))
    items = []
    for image in chosen.images:
        path = os.path.abspath(image.img_path)
        # The annotation's own path (CUHK01/0363004.png) where images live below the image
        # folder, the file name otherwise (RGBT-PEDES finds pairs by name).
        rel = os.path.relpath(path, image_root)
        display = image.name if rel.startswith("..") else rel.replace(os.sep, "/")
        t_path = os.path.abspath(image.t_path) if image.t_path else ""
        items.append(GalleryItem(path, t_path, int(image.pid), display))
    return items


def list_gallery(gallery: str, cfg=None, exclude=()) -> list[GalleryItem]:
    """The items of a gallery, in a fixed order.

    ``gallery`` is a folder of images (searched recursively, each real folder and file once, see
    ``find_images``; .jpg/.jpeg/.png/.bmp), a folder holding RGB/ and T/ (or TGray/) with the
    same file names (pairs), or ``dataset:NAME[:split]`` (a registered caption dataset's test
    (default) or val split gallery images, pids kept). ``exclude``: folders inside a gallery
    folder that are not searched (the index being written). Raises GalleryError (a ValueError)
    with one line for a missing / empty folder.
    """
    if not gallery or not str(gallery).strip():
        raise GalleryError(
            "no gallery given: pass --gallery with a folder of images, a folder holding RGB/ "
            "and T/, or dataset:NAME[:split]."
        )
    gallery = str(gallery)
    if gallery.startswith(DATASET_PREFIX):
        return list_dataset(gallery, cfg)
    return list_folder(gallery, exclude)
