#!/usr/bin/env python
"""Encode a gallery of person crops with a trained model into a text-search index.

    python tools/build_index.py --config-file configs/CUHKPEDES/irra.yml \
        MODEL.WEIGHTS output/cuhkpedes/irra/model_final.pth --gallery crops/ --out index/crops
    python tools/build_index.py --config-file configs/RGBTPEDES/mganet.yml \
        MODEL.WEIGHTS output/rgbtpedes/mganet/model_final.pth --gallery dataset:RGBTPEDES \
        --out index/rgbtpedes --approx hnsw

``--gallery`` is a folder of images (searched recursively), a folder holding ``RGB/`` and ``T/``
(or ``TGray/``) with the same file names (RGB + thermal pairs, for RGBT models), or
``dataset:NAME[:split]`` (a caption dataset's test or val gallery, identities kept, read from
``FASTREID_DATASETS``). KEY VALUE config overrides may appear anywhere, as with train_net.py.
The checkpoint loads as ``--eval-only`` loads it: an identity classifier of any size is skipped.

``--approx ivf`` (IndexIVFFlat, about sqrt(N) lists) or ``--approx hnsw`` (IndexHNSWFlat) build
an approximate index and print its recall@10 against exact search; the default is exact
(IndexFlatIP over L2-normalised features). The index folder holds index.faiss, items.json and
identity.json (the config dump and the weights' sha256, one build id in both JSON files); query
it with tools/search.py.

Symbolic links in a gallery folder are followed, each real folder and image once; hidden
folders and index folders inside it (``--out`` included) are not searched. A build holds a lock
on ``--out`` (``<out>/.lock``): a second build into the same folder stops at once. The files
are written into a hidden sibling folder that replaces ``--out`` whole at the end, so an
interrupted build leaves the previous index untouched; ``--out`` must therefore be new, empty
or an index folder.

Exit status 1 with ``error: <one line>`` when the gallery, config, checkpoint, ``--out``,
``--onnx`` or an option is unusable; the checks that need no model come first.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
from plugins.search.arguments import add_config_arguments, parse_config_args  # noqa: E402
from plugins.search.engine import SearchError, build_index  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Encode a gallery into a text-search index.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override the config, e.g. MODEL.WEIGHTS path.pth "
        "MODEL.DEVICE cpu.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--gallery",
        required=True,
        help="image folder, RGB/ + T/ pair folder, or dataset:NAME[:test|val]",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="index folder to write")
    parser.add_argument(
        "--approx", choices=("ivf", "hnsw"), default=None, help="approximate index (default exact)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per batch (default TEST.IMS_PER_BATCH)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="image-reading processes (default DATALOADER.TEST_NUM_WORKERS)",
    )
    parser.add_argument(
        "--recall-queries",
        metavar="FILE",
        default=None,
        help="sentences (one per line) to measure an approximate index's recall on (default: "
        "gallery features with a little noise)",
    )
    parser.add_argument(
        "--onnx",
        metavar="DIR",
        default=None,
        help="encode the gallery with the ONNX image encoder tools/export_onnx.py wrote to DIR "
        "from the same weights (onnxruntime)",
    )
    # --batch-size and --num-workers are checked by build_index, with one line.
    return parse_config_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        build_index(
            args.config_file,
            args.opts,
            gallery=args.gallery,
            out=args.out,
            approx=args.approx,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            recall_queries=args.recall_queries,
            extra_imports=args.extra_imports,
            onnx=args.onnx,
        )
    except SearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
