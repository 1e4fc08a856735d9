"""Print per-split statistics of a dataset beside the figures its authors published.

    python tools/dataset_stats.py --dataset RGBTPEDES [--root DIR] [--caption-file F]
    python tools/dataset_stats.py --dataset RGBTPEDES --verify [--workers N]
    python tools/dataset_stats.py --dataset SYSUMM01|RegDB|LLCM [--root DIR] [--trial T]

For each split (and all splits together): identities, images (pairs for RGBT-PEDES), captions,
caption length in words (max, mean), empty captions skipped and images by number of captions.
Counts come from the annotation file as read by the registered reader, so every image counts,
including one whose captions are all empty. ``--root`` defaults to ``$FASTREID_DATASETS`` or
``datasets``.

For the visible-infrared datasets (SYSU-MM01, RegDB, LLCM): identities and images per split
(train, test, all) and modality, and the cameras, as the registered reader lists them (SYSU-MM01's
training split is train + val ids; RegDB's split is ``--trial``, 1-10).

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

from plugins.data.datasets.vi_reid import is_vi_dataset, split_counts  # noqa: E402
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


def _parse_published(table: str, keys) -> dict[str, dict[str, dict]]:
    """``{dataset: {split: {key: count}}}`` of a published table, the counts named by ``keys``
    in column order; a ``-`` (no published figure) is left out."""
    published = {}
    for line in table.strip().splitlines():
        name, rows = line.split(":")
        published[name] = {}
        for row in rows.split("|"):
            split, *counts = row.split()
            published[name][split] = {k: int(v) for k, v in zip(keys, counts) if v != "-"}
    return published


PUBLISHED = _parse_published(_PUBLISHED_TABLE, ("ids", "images", "captions"))

# Published VI-ReID figures (shared/DATASETS.md; SYSU-MM01's image counts as reported in Dong et
# al., Richer Semantics, Better Alignment, IJCAI'25, which gives no test visible total). RegDB's
# train and test rows hold for every one of its ten splits; LLCM's and RegDB's ``all`` rows are
# the sums of their train and test rows.
#: dataset: split ids visible infrared | ... ("-" where no figure is published)
_PUBLISHED_VI_TABLE = """
SYSUMM01: train 395 22258 11909 | test 96 - 3803 | all 491 30071 15792
RegDB: train 206 2060 2060 | test 206 2060 2060 | all 412 4120 4120
LLCM: train 713 16946 13975 | test 351 8680 7166 | all 1064 25626 21141
"""

PUBLISHED_VI = _parse_published(_PUBLISHED_VI_TABLE, ("ids", "visible", "infrared"))
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


def _stat_line(label, shown, published_value=None):
    """One report line: the label, the value shown and the published figure when there is one."""
    line = f"  {label:<24}{shown:>10}"
    if published_value is not None:
        line += f"  (published {_format(published_value)})"
    return line


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
            lines.append(_stat_line(label, _format(value), published.get(split, {}).get(key)))
    return lines


def vi_dataset_stats(dataset):
    """Split name (train, test, all) -> ``plugins.data.datasets.vi_reid.split_counts``.

    Training and test identities are disjoint (the readers check it) but numbered in different
    label spaces (training labels are relabelled, RegDB's and LLCM's test labels are not), so
    ``all`` adds the two splits' counts rather than counting labels.
    """
    stats = {"train": split_counts(dataset.train), "test": split_counts(dataset.test.images)}
    stats["all"] = {
        key: sorted(set(stats["train"][key]) | set(stats["test"][key]))
        if key == "cameras"
        else stats["train"][key] + stats["test"][key]
        for key in stats["train"]
    }
    return stats


def format_vi_report(name, dataset, stats, published):
    """Lines of the VI-ReID report: ids and images per modality, the published figure beside."""
    labels = {
        "ids": "ids",
        "visible": "visible images",
        "infrared": "infrared images",
        "visible_ids": "ids with visible",
        "infrared_ids": "ids with infrared",
        "cameras": "cameras",
    }
    head = f"{name}: {dataset.dataset_root}"
    if hasattr(dataset, "trial"):
        head += f" (split {dataset.trial})"
    lines = [head]
    for split, values in stats.items():
        lines.append(split)
        for key, label in labels.items():
            value = values[key]
            shown = ",".join(map(str, value)) if key == "cameras" else _format(value)
            lines.append(_stat_line(label, shown, published.get(split, {}).get(key)))
    return lines


def image_paths(dataset):
    """Every image file of every split, RGB then thermal per record, each path once, in order."""
    paths = {}
    if is_vi_dataset(dataset.name):
        for image in [*dataset.train, *dataset.test.images]:
            paths[image.path] = None
        return list(paths)
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
    parser.add_argument("--dataset", required=True, choices=sorted([*PUBLISHED, *PUBLISHED_VI]))
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
        "--trial", type=int, default=1, help="RegDB's train/test split, 1-10 (default 1)"
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
    if args.dataset in PUBLISHED_VI:
        dataset = DATASET_REGISTRY.get(args.dataset)(
            root=args.root, trial=args.trial, verbose=False
        )
        stats = vi_dataset_stats(dataset)
        lines = format_vi_report(args.dataset, dataset, stats, PUBLISHED_VI[args.dataset])
    else:
        dataset = DATASET_REGISTRY.get(args.dataset)(
            root=args.root, caption_file=args.caption_file, verbose=False
        )
        stats = dataset_stats(dataset)
        lines = format_report(args.dataset, dataset, stats, PUBLISHED[args.dataset])
    print("\n".join(lines))
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
