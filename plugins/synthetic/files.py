"""Shared steps of the layout writers: the dataset folder, its image, JSON and list files, the
summary of what was written."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image


class Summary:
    """Counts of a written dataset: ids, images and captions per split group, images per challenge."""

    def __init__(self, fmt: str, root: Path) -> None:
        self.fmt, self.root = fmt, root
        self.ids: dict[str, set] = {}
        self.images: Counter = Counter()
        self.captions: Counter = Counter()
        self.challenges: Counter = Counter()
        self.extra: dict = {}

    def add(
        self,
        split: str,
        pid: int,
        n_images: int = 1,
        n_captions: int = 0,
        challenge: str | None = None,
    ):
        self.ids.setdefault(split, set()).add(pid)
        self.images[split] += n_images
        self.captions[split] += n_captions
        if challenge:
            self.challenges[challenge] += n_images

    def as_dict(self) -> dict:
        out = {
            "format": self.fmt,
            "root": str(self.root),
            "ids": {k: len(v) for k, v in self.ids.items()},
            "images": dict(self.images),
            "captions": dict(self.captions),
            "challenges": dict(self.challenges),
        }
        out.update(self.extra)
        return out


def dataset_root(out_dir: str | Path, name: str, overwrite: bool) -> Path:
    """``<out_dir>/<name>``, created empty; an existing non-empty one is replaced only with
    ``overwrite``."""
    root = Path(out_dir) / name
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{root} exists and is not empty; use overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


class DatasetFolder:
    """One dataset being written under ``<out_dir>/<name>``; every path below is relative to it.

    With ``captions_json`` the captions given to ``caption`` are written to
    ``captions_synthetic.json`` (relative image path -> caption) by ``finish``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        name: str,
        fmt: str,
        overwrite: bool,
        jpeg_quality: int = 92,
        captions_json: bool = False,
    ) -> None:
        self.root = dataset_root(out_dir, name, overwrite)
        self.summary = Summary(fmt, self.root)
        self.jpeg_quality = jpeg_quality
        self.captions: dict[str, str] | None = {} if captions_json else None

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_image(self, img: Image.Image, rel: str) -> None:
        """Save ``img``; the suffix of ``rel`` picks the format (JPEG at ``jpeg_quality``)."""
        path = self._path(rel)
        if path.suffix.lower() in (".jpg", ".jpeg"):
            img.save(path, quality=self.jpeg_quality)
        else:
            img.save(path)

    def write_json(self, obj, rel: str) -> None:
        with open(self._path(rel), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)

    def write_lines(self, rel: str, lines: Iterable[str]) -> None:
        """A text file of one entry a line."""
        self._path(rel).write_text("\n".join(lines) + "\n")

    def write_ids(self, rel: str, pids: Iterable[int]) -> None:
        """A text file of ONE comma-separated line of pids (the SYSU-MM01 / LLCM id lists)."""
        self._path(rel).write_text(",".join(str(p) for p in pids) + "\n")

    def caption(self, rel: str, make: Callable[[], str]) -> None:
        """Record the caption of image ``rel`` (``make`` runs only when captions are kept)."""
        if self.captions is not None:
            self.captions[rel] = make()

    def finish(self) -> dict:
        """Write the kept captions; the summary as a dict."""
        if self.captions is not None:
            self.write_json(self.captions, "captions_synthetic.json")
        return self.summary.as_dict()
