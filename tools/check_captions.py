#!/usr/bin/env python
r"""Check a VI-ReID caption file against the dataset a config trains on, before training.

    python tools/check_captions.py --config-file configs/Demo/regdb_agw.yml \
        DATASETS.VI_CAPTIONS captions_synthetic.json
    python tools/check_captions.py --config-file configs/SYSUMM01/agw_R50.yml --captions llava.json

RSBA (Dong et al., IJCAI'25) aligns every training image with a caption a vision-language model
wrote offline (LLaVA, prompted "Please describe the characteristics of the pedestrian in the
image"), read from the JSON file ``DATASETS.VI_CAPTIONS`` (image path relative to the dataset
folder -> caption). This builds the first dataset of ``DATASETS.NAMES`` as training would and
prints, per split (train / test) and modality (visible / infrared), how many images the file
captions, lacks or gives an empty caption; then the captions several training images share (a
vision-language model often repeats one sentence: a warning, not a failure), the keys that name
no image of the dataset (stale keys), and the training captions' length in CLIP tokens beside
``INPUT.TEXT.CONTEXT_LENGTH`` (longer ones are truncated).

``--captions FILE`` replaces ``DATASETS.VI_CAPTIONS``: a path to an existing file as given,
otherwise (as the config key) relative to the dataset folder. ``--root`` defaults to
``$FASTREID_DATASETS`` or ``datasets``.

Exit status 0 when every training image has a non-empty caption (or
``DATASETS.VI_CAPTION_FALLBACK`` fills the others), 1 otherwise or when the file cannot be read;
the last line says which.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies the fastreid fixes, registers the readers)

# isort: split
from tabulate import tabulate  # noqa: E402

from plugins.data.datasets.text_reid import shorten  # noqa: E402
from plugins.data.datasets.vi_reid import build_vi_dataset, is_vi_dataset  # noqa: E402
from plugins.data.vi_captions import (  # noqa: E402
    CAPTIONS_KEY,
    FALLBACK_KEY,
    CaptionFileError,
    caption_coverage,
    caption_file_path,
    missing_captions,
    read_caption_file,
)
from plugins.engine import build_config  # noqa: E402

_COLUMNS = ("split", "modality", "images", "captioned", "missing", "empty")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--captions",
        metavar="FILE",
        help=f"the caption file (default: the config's {CAPTIONS_KEY})",
    )
    parser.add_argument(
        "--root", help="datasets root (default $FASTREID_DATASETS or ./datasets)", default=None
    )
    parser.add_argument(
        "--show", type=int, default=5, metavar="N", help="duplicate groups and keys listed (5)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def _quote(text, width=90):
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def format_report(name, path, report, show=5):
    """Lines of the coverage report (everything but the final verdict)."""
    lines = [f"{name}: captions from {path}", ""]
    rows = [[row[c] for c in _COLUMNS] for row in report.rows]
    lines += tabulate(rows, headers=_COLUMNS, tablefmt="pipe", numalign="right").splitlines()
    lines.append("")
    if report.duplicate_texts:
        lines.append(
            f"warning: {report.duplicate_texts} distinct training captions are each shared by "
            f"more than one image ({report.duplicate_images} images in all); largest groups:"
        )
        lines += [f"  {n:>6} x {_quote(text)}" for text, n in report.largest_duplicates[:show]]
    else:
        lines.append("duplicate captions: none (every training image has its own text)")
    if report.stale:
        lines.append(
            f"stale keys: {len(report.stale)} keys of the file name no image of {name}: "
            f"{', '.join(report.stale[:show])}"
            + (f", ... ({len(report.stale) - show} more)" if len(report.stale) > show else "")
        )
        for prefix, keys in sorted(report.stale_prefixes.items()):
            lines.append(
                f"  {len(keys)} of them name an image once '{prefix}/' is dropped: keys must be "
                "relative to the dataset folder"
            )
    else:
        lines.append("stale keys: none")
    lines.append(
        f"caption length (CLIP tokens, with start and end): mean {report.token_mean:.1f}, max "
        f"{report.token_max}; {report.truncated} training captions exceed "
        f"INPUT.TEXT.CONTEXT_LENGTH={report.context_length} and are truncated"
    )
    return lines


def verdict(report, dataset, captions):
    """The final line: whether every training image has a caption."""
    train = sum(r["images"] for r in report.rows if r["split"] == "train")
    lacking = report.lacking("train")
    if not lacking:
        return f"OK: all {train} training images have a caption"
    if report.ok:
        return (
            f"OK: {lacking} of {train} training images have no caption and use the fallback "
            f"{report.fallback!r} ({FALLBACK_KEY})"
        )
    missing, empty = missing_captions(dataset.train, dataset.dataset_root, captions)
    return (
        f"FAIL: {lacking} of {train} training images have no caption ({len(missing)} missing, "
        f"{len(empty)} empty): {shorten(missing + empty)}; add them to the file or set "
        f"{FALLBACK_KEY}"
    )


def caption_path(args, cfg, dataset_root):
    """The caption file to check, or None when neither ``--captions`` nor the config names one."""
    if args.captions:
        if os.path.isfile(args.captions):
            return args.captions
        return caption_file_path(args.captions, dataset_root)
    if cfg.DATASETS.VI_CAPTIONS:
        return caption_file_path(cfg.DATASETS.VI_CAPTIONS, dataset_root)
    return None


def main(argv=None):
    args = parse_args(argv)
    if args.root is not None:
        os.environ["FASTREID_DATASETS"] = args.root
    cfg = build_config(args.config_file, args.opts)
    name = cfg.DATASETS.NAMES[0]
    if not is_vi_dataset(name):
        print(f"error: DATASETS.NAMES[0] = {name!r} is not a VI-ReID dataset", file=sys.stderr)
        return 1
    dataset = build_vi_dataset(cfg, name, verbose=False)
    path = caption_path(args, cfg, dataset.dataset_root)
    if path is None:
        print(f"FAIL: no caption file: set {CAPTIONS_KEY} or pass --captions FILE")
        return 1
    try:
        captions = read_caption_file(path, "--captions" if args.captions else CAPTIONS_KEY)
    except CaptionFileError as e:
        print(f"FAIL: {e}")
        return 1
    report = caption_coverage(
        dataset, captions, cfg.INPUT.TEXT.CONTEXT_LENGTH, cfg.DATASETS.VI_CAPTION_FALLBACK
    )
    print("\n".join(format_report(name, path, report, args.show)))
    print(verdict(report, dataset, captions))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
