#!/usr/bin/env python
"""Search a gallery index (tools/build_index.py) with a sentence.

    python tools/search.py --index index/crops "a woman in a red coat with a black bag"
    python tools/search.py --index index/cuhkpedes --top-k 5 --pid 30 "a man in a white shirt"

Prints one ``rank score name`` line per result (score: cosine similarity) and draws the ranked
list to ``--picture`` (default ``<index>/last_query.png``; RGB above thermal for pair galleries).
With ``--pid N`` on a gallery that has identities (``dataset:NAME``), matches get green borders
and the others red.

The model is the one the index records: its weights file must be unchanged (sha256 checked);
``--weights`` names a copy of it elsewhere, and weights of another model are refused. Where the
picture goes is settled before the model is loaded: when the index folder is read-only, the
default picture goes to the system's temporary folder (one line on stderr says where); a
``--picture`` that cannot be written is refused. Exit status 1 with ``error: <one line>`` for a
missing index, an empty query, such weights, a ``--device`` other than cpu, cuda[:N] or auto,
or such a picture.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
from plugins.search import folders  # noqa: E402
from plugins.search.engine import (  # noqa: E402
    SearchError,
    TextSearcher,
    check_device,
    check_query,
)
from plugins.search.index import PICTURE_FILE as PICTURE_NAME  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Search a gallery index with a sentence.")
    parser.add_argument("--index", required=True, metavar="DIR", help="index folder")
    parser.add_argument("query", help="the sentence describing the person")
    parser.add_argument("--top-k", type=int, default=10, help="results to show (default 10)")
    parser.add_argument(
        "--weights", default=None, help="a copy of the index's weights file at another path"
    )
    parser.add_argument(
        "--picture",
        default=None,
        metavar="PNG",
        help=f"ranked-list picture (default <index>/{PICTURE_NAME}); '' draws none",
    )
    parser.add_argument(
        "--pid", type=int, default=None, help="identity the query describes (green/red borders)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    return parser.parse_args(argv)


def draw_results(query, results, path, pid=None):
    """The ranked list as a picture; borders say match / no match when ``pid`` is given."""
    from plugins.evaluation.visualize import draw_ranked_lists

    title = f"top {len(results)}" + (f", identity {pid}" if pid is not None else "")
    row = {
        "caption": query,
        "title": title,
        "results": [
            (r["path"], r["t_path"], None if pid is None else r["pid"] == pid) for r in results
        ],
    }
    return draw_ranked_lists([row], path)


def picture_path(index_dir, picture):
    """Where the ranked-list picture goes ('' for none), decided before any search.

    The default, ``<index>/last_query.png``, moves to the temporary folder when the index
    folder cannot be written (a shared, read-only index), with a line on stderr saying so; a
    ``--picture`` that cannot be written is a ``SearchError``.
    """
    if picture == "":
        return ""
    if picture is not None:
        target = os.path.abspath(picture)
        folder = os.path.dirname(target)
        exists = os.path.exists(target)
        if (
            not os.path.isdir(folder)
            or not folders.is_writable(folder)
            or (exists and not os.access(target, os.W_OK))
        ):
            raise SearchError(
                f"--picture {picture} cannot be written ({folder} is missing or read-only): "
                "pass a --picture in a folder you can write to, or --picture '' for none."
            )
        return picture
    default = os.path.join(index_dir, PICTURE_NAME)
    if not os.path.isdir(index_dir):
        return default  # the searcher refuses the missing index first
    if folders.is_writable(index_dir) and (
        not os.path.exists(default) or os.access(default, os.W_OK)
    ):
        return default
    elsewhere = os.path.join(tempfile.gettempdir(), PICTURE_NAME)
    print(
        f"the index folder {index_dir} is read-only: the picture goes to {elsewhere} "
        "(--picture chooses another place)",
        file=sys.stderr,
    )
    return elsewhere


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.top_k < 1:
            raise SearchError(f"--top-k must be at least 1, got {args.top_k}.")
        query = check_query(args.query)  # before loading anything
        if args.device != "auto":
            check_device(args.device, f"--device {args.device}")
        picture = picture_path(args.index, args.picture)
        searcher = TextSearcher(args.index, weights=args.weights, device=args.device)
        if args.pid is not None and not searcher.has_identities:
            raise SearchError(
                f"--pid needs a gallery with identities (built from dataset:NAME); the index "
                f"{args.index} was built from a folder."
            )
        results = searcher.search(query, args.top_k)
        for r in results:
            print(f"{r['rank']} {r['score']:.4f} {r['name']}")
        if picture and results:
            try:
                draw_results(query, results, picture, args.pid)
            except OSError as e:
                raise SearchError(f"cannot write the picture {picture}: {e}") from e
            print(f"picture: {picture}", file=sys.stderr)
    except SearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
