"""Print per-split statistics of a caption dataset beside the figures its authors published.

    python tools/dataset_stats.py --dataset RGBTPEDES [--root DIR] [--caption-file F]

For each split (and all splits together): identities, images (pairs for RGBT-PEDES), captions,
caption length in words (max, mean), empty captions skipped and images by number of captions.
Counts come from the annotation file as read by the registered reader, so every image counts,
including one whose captions are all empty. ``--root`` defaults to ``$FASTREID_DATASETS`` or
``datasets``.
"""

import argparse
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies the fastreid fixes, registers the readers)

# isort: split
from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402

# Published figures (shared/DATASETS.md). ICFG-PEDES has one caption per image and RSTPReid two,
# so their caption counts follow from the published image counts.
PUBLISHED = {
    "CUHKPEDES": {
        "train": {"ids": 11003, "images": 34054},
        "val": {"ids": 1000, "images": 3078, "captions": 6158},
        "test": {"ids": 1000, "images": 3074, "captions": 6156},
        "all": {"ids": 13003, "images": 40206, "captions": 80412},
    },
    "ICFGPEDES": {
        "train": {"ids": 3102, "images": 34674, "captions": 34674},
        "test": {"ids": 1000, "images": 19848, "captions": 19848},
        "all": {"ids": 4102, "images": 54522, "captions": 54522},
    },
    "RSTPReid": {
        "train": {"ids": 3701, "images": 18505, "captions": 37010},
        "val": {"ids": 200, "images": 1000, "captions": 2000},
        "test": {"ids": 200, "images": 1000, "captions": 2000},
        "all": {"ids": 4101, "images": 20505, "captions": 41010},
    },
    "RGBTPEDES": {
        "train": {"ids": 1266, "images": 3250, "captions": 5497},
        "test": {"ids": 553, "images": 1473, "captions": 2490},
        "all": {
            "ids": 1822,
            "images": 4723,
            "captions": 7987,
            "words_max": 112,
            "words_mean": 38.2,
            "images_with_1_captions": 1459,
            "images_with_2_captions": 3264,
        },
    },
}


def split_stats(records):
    """Statistics of a list of ``ImageRecord`` (one split or several)."""
    captions = [c for r in records for c in r.captions]
    words = [len(c.split()) for c in captions]
    stats = {
        "ids": len({r.pid for r in records}),
        "images": len(records),
        "captions": len(captions),
        "words_max": max(words, default=0),
        "words_mean": sum(words) / len(words) if words else 0.0,
        "empty_skipped": sum(r.num_empty for r in records),
    }
    for k, n in sorted(Counter(len(r.captions) for r in records).items()):
        stats[f"images_with_{k}_captions"] = n
    return stats


def dataset_stats(dataset):
    """Split name -> statistics, with ``all`` for every split together."""
    stats = {split: split_stats(records) for split, records in dataset.records.items()}
    stats["all"] = split_stats([r for records in dataset.records.values() for r in records])
    return stats


def _format(value):
    return f"{value:.1f}" if isinstance(value, float) else f"{value:,}"


def format_report(name, dataset, stats, published):
    """Lines of the report: one per (split, statistic), the published figure beside it."""
    image_noun = dataset.image_noun
    labels = {
        "ids": "ids",
        "images": image_noun,
        "captions": "captions",
        "words_max": "words max",
        "words_mean": "words mean",
        "empty_skipped": "empty captions skipped",
    }
    lines = [f"{name}: {dataset.dataset_root} (annotations: {dataset.annotation_file})"]
    for split, values in stats.items():
        lines.append(split)
        for key, value in values.items():
            label = labels.get(key)
            if label is None:  # images_with_<k>_captions
                k = key.split("_")[2]
                label = f"{image_noun} with {k} caption{'s' if k != '1' else ''}"
            line = f"  {label:<24}{_format(value):>10}"
            if key in published.get(split, {}):
                line += f"  (published {_format(published[split][key])})"
            lines.append(line)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(PUBLISHED))
    parser.add_argument(
        "--root",
        default=os.environ.get("FASTREID_DATASETS", "datasets"),
        help="the datasets folder (default: $FASTREID_DATASETS or datasets)",
    )
    parser.add_argument(
        "--caption-file",
        default="",
        help="annotation file instead of the default, relative to the dataset folder or absolute",
    )
    args = parser.parse_args(argv)
    dataset = DATASET_REGISTRY.get(args.dataset)(
        root=args.root, caption_file=args.caption_file, verbose=False
    )
    stats = dataset_stats(dataset)
    print("\n".join(format_report(args.dataset, dataset, stats, PUBLISHED[args.dataset])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
