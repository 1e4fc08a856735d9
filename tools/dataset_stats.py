"""Print per-split statistics of a caption dataset beside the figures its authors published.

    python tools/dataset_stats.py --dataset RGBTPEDES [--root DIR] [--caption-file F]
    python tools/dataset_stats.py --dataset RGBTPEDES --verify [--workers N]

For each split (and all splits together): identities, images (pairs for RGBT-PEDES), captions,
caption length in words (max, mean), empty captions skipped and images by number of captions.
Counts come from the annotation file as read by the registered reader, so every image counts,
including one whose captions are all empty. ``--root`` defaults to ``$FASTREID_DATASETS`` or
``datasets``.

``--verify`` then decodes every image of every split once (RGB and thermal of a pair, each
file once) exactly as the loaders read it, lists the files that cannot be read with their errors
and exits with status 1 when there is any, so a corrupt file is found before a long training
rather than when it is first drawn.
"""

import argparse
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies the fastreid fixes, registers the readers)

# isort: split
from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402

from plugins.data.transforms import ImageReadError, read_image  # noqa: E402

# Published figures (shared/DATASETS.md). ICFG-PEDES has one caption per image and RSTPReid two,
# so their caption counts follow from the published image counts.
#: dataset: split ids images [captions] | ... (the split rows of PUBLISHED)
_PUBLISHED_TABLE = """
CUHKPEDES: train 11003 34054 | val 1000 3078 6158 | test 1000 3074 6156 | all 13003 40206 80412
ICFGPEDES: train 3102 34674 34674 | test 1000 19848 19848 | all 4102 54522 54522
RSTPReid: train 3701 18505 37010 | val 200 1000 2000 | test 200 1000 2000 | all 4101 20505 41010
RGBTPEDES: train 1266 3250 5497 | test 553 1473 2490 | all 1822 4723 7987
"""


def _parse_published(table: str) -> dict[str, dict[str, dict]]:
    """``{dataset: {split: {"ids", "images"[, "captions"]}}}`` of ``_PUBLISHED_TABLE``."""
    published = {}
    for line in table.strip().splitlines():
        name, rows = line.split(":")
        published[name] = {}
        for row in rows.split("|"):
            split, *counts = row.split()
            keys = ("ids", "images", "captions")
            published[name][split] = {k: int(v) for k, v in zip(keys, counts)}
    return published


PUBLISHED = _parse_published(_PUBLISHED_TABLE)
PUBLISHED["RGBTPEDES"]["all"].update(
    words_max=112, words_mean=38.2, images_with_1_captions=1459, images_with_2_captions=3264
)


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


def image_paths(dataset):
    """Every image file of every split, RGB then thermal per record, each path once, in order."""
    paths = {}
    for records in dataset.records.values():
        for r in records:
            for path in (r.img_path, r.t_path):
                if path:
                    paths[path] = None
    return list(paths)


def check_image(path):
    """``(path, error)``: ``error`` is "" when ``read_image`` decodes the file, else why not."""
    try:
        read_image(path)
    except ImageReadError as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        return path, f"{type(cause).__name__}: {cause}"
    return path, ""


def _progress(total):
    """``(update, close)``: a tqdm bar when tqdm is installed, else a line every 10 %."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, unit="img", desc="verifying", file=sys.stderr)
        return lambda done: bar.update(done - bar.n), bar.close
    last = [-1]

    def report(done):
        step = done * 10 // max(1, total)
        if step != last[0]:
            last[0] = step
            print(f"  verified {done}/{total} images", file=sys.stderr, flush=True)

    return report, lambda: None


def verify_images(paths, workers):
    """``[(path, error)]`` of the files of ``paths`` that cannot be read, in ``paths`` order.

    Decoding runs in ``workers`` threads: PIL releases the GIL while it decodes.
    """
    update, close = _progress(len(paths))
    bad = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for done, (path, error) in enumerate(pool.map(check_image, paths), start=1):
                if error:
                    bad.append((path, error))
                update(done)
    finally:
        close()
    return bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(PUBLISHED))
    root_help = "the datasets folder (default: $FASTREID_DATASETS or datasets)"
    parser.add_argument(
        "--root", default=os.environ.get("FASTREID_DATASETS", "datasets"), help=root_help
    )
    parser.add_argument(
        "--caption-file",
        default="",
        help="annotation file instead of the default, relative to the dataset folder or absolute",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also decode every image once; exit 1 when any cannot be read",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="threads decoding images for --verify (default: min(4, CPU count))",
    )
    args = parser.parse_args(argv)
    dataset = DATASET_REGISTRY.get(args.dataset)(
        root=args.root, caption_file=args.caption_file, verbose=False
    )
    stats = dataset_stats(dataset)
    print("\n".join(format_report(args.dataset, dataset, stats, PUBLISHED[args.dataset])))
    if not args.verify:
        return 0
    paths = image_paths(dataset)
    bad = verify_images(paths, args.workers)
    if bad:
        print("unreadable images:")
        for path, error in bad:
            print(f"  {path}: {error}")
    print(f"verified {len(paths)} images, {len(bad)} unreadable")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
