#!/usr/bin/env python
"""Serve a search page for a text person-search index (built by tools/build_index.py).

    python tools/search_app.py --index output/index/cuhkpedes_test
    python tools/search_app.py --index DIR --port 8000 --weights model_final.pth --device cuda

Then open http://127.0.0.1:7860/ (``/?q=a+man+in+a+black+jacket&k=8`` opens with that search
done). The model and the index are loaded once; each request is logged on one line; Ctrl-C (or
SIGTERM) stops the server. The JSON API behind the page is
``GET /api/search?q=TEXT&k=10[&pid=N]``; gallery images are served from ``/image/<index>``
(``?thermal=1`` for the thermal image of a pair). See ``plugins/search/app.py``.

Requests that arrive while a search runs are answered together, their sentences in one pass
through the text encoder (at most ``--max-batch``; 1 answers one at a time), and the socket
queues up to 1024 waiting connections. ``tools/benchmark_search.py --concurrency N`` measures
the page under load.

Exit status: 0 after Ctrl-C or SIGTERM; 1 with a one-line message when the index or weights
cannot be loaded or the address cannot be bound. ``kill -USR1 <pid>`` prints every thread's
stack to stderr (a request that seems stuck) and the server goes on.
"""

import argparse
import faulthandler
import logging
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", required=True, metavar="DIR", help="index folder")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only). Any other address, "
        "e.g. 0.0.0.0, exposes the search and every gallery image to the network.",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free)")
    parser.add_argument(
        "--weights",
        default=None,
        metavar="W",
        help="model checkpoint (default: the one the index records; other weights are refused)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for the text encoder: cpu, cuda[:N], auto"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        metavar="N",
        help="searches of concurrent requests encoded together, at most (default 64; 1: one "
        "at a time)",
    )
    return parser.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    # The plugin's own lines (loading, one per request) and the checkpoint loaded at INFO;
    # other libraries' (faiss announcing which build it loads) only from WARNING up.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name in ("plugins", "fastreid.utils.checkpoint"):
        logging.getLogger(name).setLevel(logging.INFO)
    # Imported after parsing so that --help answers without loading torch.
    from plugins.search.app import MAX_BATCH, make_server
    from plugins.search.engine import SearchError, TextSearcher, check_device

    max_batch = MAX_BATCH if args.max_batch is None else args.max_batch
    try:
        if max_batch < 1:
            raise SearchError(f"--max-batch {max_batch}: pass 1 (one search at a time) or more.")
        if args.device != "auto":
            check_device(args.device, f"--device {args.device}")
        searcher = TextSearcher(args.index, args.weights, args.device)
    except SearchError as e:
        sys.exit(f"error: {e}")
    # The first forward pass pays for lazy initialisation (hundreds of ms on a CPU): pay it
    # now, so that the first request's elapsed_ms is like every other's.
    searcher.search("a person", 1)
    searcher.search_batch(["a person", "a man in a black jacket"], 1)
    try:
        server = make_server(searcher, args.host, args.port, max_batch)
    except OSError as e:
        sys.exit(
            f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); "
            "choose another --port or --host"
        )
    # SIGTERM (kill, a service manager) stops as cleanly as Ctrl-C. SIGINT is set too: a
    # process started in the background by a shell without job control (a script's `cmd &`, CI)
    # inherits SIGINT ignored, and Python then leaves it ignored, so Ctrl-C would not stop it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    size = server.gallery_size()
    gallery = f"{size} gallery images" if size is not None else "the gallery"
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {args.host}: the search and the gallery images are "
            "reachable from the network",
            file=sys.stderr,
        )
    print(
        f"Searching {gallery} of {args.index} on {server.url} (Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
    # The server is closed and every line written: leave without finalizing the interpreter.
    # Tearing down the ~4,000 modules a search imports (torch, sympy, scipy) takes 1.1 s on an
    # idle 2-core machine and about 5 s on a busy one, while the request threads (daemons) may
    # still be running; nothing is left to save.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
