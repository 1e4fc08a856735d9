#!/usr/bin/env python
"""Write a procedural synthetic pedestrian dataset in an official on-disk layout.

    python tools/make_synthetic.py --format rgbtpedes --ids 100 --seed 0 --out datasets

Formats and what ``--images-per-id MIN MAX`` counts:

* ``rgbtpedes``  RGB/T pairs with captions and challenge lists   images per identity (2 4)
* ``cuhkpedes``  RGB images with captions, train/val/test        images per identity (2 4)
* ``regdb``      Visible/Thermal .bmp + 10 trial index files     images per identity and modality (10 10)
* ``llcm``       vis/nir cameras, train index files, test_id     images per identity and camera (2 4)
* ``sysumm01``   cam1..cam6, exp/{train,val,test}_id.txt         images per identity and camera (2 4)

The dataset goes to ``<out>/<RGBT-PEDES|CUHK-PEDES|RegDB|LLCM|SYSU-MM01>``; a non-empty one is
only replaced with ``--overwrite``. The same arguments always give the same files.

The visible-infrared formats (regdb, llcm, sysumm01) also write ``captions_synthetic.json``
(image path relative to the dataset folder -> caption, colour-free for infrared images), the
captions RSBA trains with (``DATASETS.VI_CAPTIONS captions_synthetic.json``);
``--no-captions-json`` leaves it out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "synthetic"


def _load_synthetic():
    """Load the generator package on its own: it needs only numpy and PIL, while importing the
    ``plugins`` package would first load torch and fastreid (many seconds)."""
    name = "_synthetic_pedestrians"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, _PACKAGE / "__init__.py", submodule_search_locations=[str(_PACKAGE)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


synthetic = _load_synthetic()
_VI_FORMATS = ("regdb", "llcm", "sysumm01")


def _progress_callback(quiet: bool):
    """Per-identity progress: a tqdm bar when tqdm is installed, else a line every 10 %."""
    if quiet:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="id", desc="identities", file=sys.stderr)
            bar.update(done - bar.n)

        return update, lambda: bar is not None and bar.close()

    last = [-1]

    def report(done: int, total: int) -> None:
        step = done * 10 // max(1, total)
        if step != last[0]:
            last[0] = step
            print(f"  {done}/{total} identities", file=sys.stderr, flush=True)

    return report, lambda: None


def _print_summary(summary: dict, seconds: float) -> None:
    print(f"format      {summary['format']}")
    print(f"written to  {summary['root']}")
    for key in ("ids", "images", "captions", "challenges", "test_challenges"):
        values = summary.get(key)
        if values:
            text = ", ".join(f"{k}: {v}" for k, v in values.items())
            print(f"{key:<11} {text}")
    if "trials" in summary:
        print(f"trials      {summary['trials']}")
    n_images = sum(summary.get("images", {}).values())
    rate = n_images / seconds if seconds > 0 else float("inf")
    print(f"time        {seconds:.1f} s ({rate:.0f} images/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", required=True, choices=sorted(synthetic.WRITERS))
    parser.add_argument("--ids", type=int, default=100, help="number of identities (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    datasets_root = os.environ.get("FASTREID_DATASETS", "datasets")
    out_help = "datasets root (default $FASTREID_DATASETS or ./datasets)"
    parser.add_argument("--out", default=datasets_root, help=out_help)
    parser.add_argument(
        "--images-per-id",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="image count range; see the table above for what it counts",
    )
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty dataset folder"
    )
    parser.add_argument(
        "--no-captions-json",
        dest="captions_json",
        action="store_false",
        help="VI formats: do not write captions_synthetic.json (image path -> caption), which "
        "they write by default",
    )
    parser.add_argument(
        "--preview", metavar="PNG", help="also save a contact sheet of 12 RGB/thermal pairs"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    if args.ids < 1:
        parser.error("--ids must be positive")
    if args.seed < 0:
        parser.error("--seed must be non-negative")
    if args.height < 16 or args.width < 8:
        parser.error("--height/--width must be at least 16/8")
    if args.images_per_id and not 1 <= args.images_per_id[0] <= args.images_per_id[1]:
        parser.error("--images-per-id needs 1 <= MIN <= MAX")
    if not args.captions_json and args.format not in _VI_FORMATS:
        parser.error("--no-captions-json applies to regdb, llcm and sysumm01")

    kwargs: dict = {"overwrite": args.overwrite}
    if args.images_per_id:
        kwargs["images_per_id"] = tuple(args.images_per_id)
    if args.format in _VI_FORMATS:
        kwargs["captions_json"] = args.captions_json
    progress, close = _progress_callback(args.quiet)
    kwargs["progress"] = progress

    writer = synthetic.WRITERS[args.format]
    start = time.perf_counter()
    try:
        summary = writer(
            args.out, args.ids, args.seed, height=args.height, width=args.width, **kwargs
        )
    except FileExistsError as err:
        close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    close()
    _print_summary(summary, time.perf_counter() - start)

    if args.preview:
        records = list(
            synthetic.generate(
                min(args.ids, 6), (2, 2), args.seed, height=args.height, width=args.width
            )
        )
        synthetic.contact_sheet(records[:12]).save(args.preview)
        print(f"preview     {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
