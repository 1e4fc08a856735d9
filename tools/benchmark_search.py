#!/usr/bin/env python
"""Benchmark a text query against a large exact index, or the search page under load.

    OMP_NUM_THREADS=2 python tools/benchmark_search.py [--items 100000] [--queries 50] [--threads 2]
    OMP_NUM_THREADS=2 python tools/benchmark_search.py --concurrency 50 [--requests 300] \
        [--index DIR] [--max-batch N]

Builds an exact index (``IndexFlatIP``) of ``--items`` random L2-normalised 512-d features in a
temporary folder (written and read back as tools/build_index.py writes it), builds the full-size
CLIP ViT-B/16 text encoder from random initialisation (``CLIPRetrieval`` of
configs/CUHKPEDES/clip_sdm.yml, no weights: timings do not depend on the weights' values) and
times query text -> top-10 over ``--queries`` sentences after ``--warmup`` warm-ups: the
encoding of the query's own tokens (``QueryEncoder``, what tools/search.py runs) and the index
search (``SearchIndex.search``), separately and together. The encoding of the same sentences
padded to 77 tokens is timed too, for comparison, and the largest difference between the two
features is printed; and so is the encoding of all of them in one pass
(``QueryEncoder.encode_many``, as the search page answers requests that arrive together).

``--concurrency N`` measures the search page instead (``tools/search_app.py``, started as a
separate process with ``--threads`` threads): ``--requests`` ``/api/search`` requests, N at a
time, after a few sequential warm-ups; it prints the latency percentiles (p50 / p90 / p99 / max,
measured by the client from sending to the end of the answer), queries per second, how many
searches the server answered together, and checks every answer against the same query searched
alone. The index is ``--index DIR`` or, without it, one built here in a temporary folder: a
tiny CLIP + SDM (``configs/Demo/tipr_clip_sdm.yml``, random initialisation, as the tests build
it) over the gallery images of ``tools/make_synthetic.py --format cuhkpedes --ids
--synthetic-ids``. ``--max-batch`` is passed to the page (1: one search at a time).

Run it alone on the machine: other processes change the figures.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (applies fastreid compat fixes first; registers components)

# isort: split
import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

from plugins.data.captions import tokenize  # noqa: E402
from plugins.search.engine import QueryEncoder, base_config  # noqa: E402
from plugins.search.gallery import GalleryItem  # noqa: E402
from plugins.search.index import SearchIndex  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "CUHKPEDES", "clip_sdm.yml")
TINY_CONFIG = os.path.join(ROOT, "configs", "Demo", "tipr_clip_sdm.yml")
SUBJECTS = ("A woman", "A man", "A young girl", "An elderly man", "A tall boy", "A lady")
CLOTHES = (
    "wearing a red coat and blue jeans",
    "in a white shirt and grey trousers",
    "with long black hair, a pink dress and white shoes",
    "wearing a green jacket, black pants and carrying a black backpack on her back",
    "dressed in a dark blue suit with a light blue tie and brown leather shoes",
    "in a yellow t-shirt",
)
EXTRAS = (
    "",
    " She is holding a phone in her right hand.",
    " He carries a white plastic bag and walks towards the camera.",
    " The person has short hair, glasses and a watch on the left wrist, and is looking down.",
)


def sentences(count, seed=0):
    """``count`` person descriptions of varied length (about 8 to 45 tokens)."""
    rng = np.random.default_rng(seed)
    return [
        f"{SUBJECTS[rng.integers(len(SUBJECTS))]} {CLOTHES[rng.integers(len(CLOTHES))]}."
        f"{EXTRAS[rng.integers(len(EXTRAS))]}"
        for _ in range(count)
    ]


def summary(times_ms):
    """``median / p90 / max`` of a list of milliseconds."""
    values = np.asarray(times_ms)
    return f"{np.median(values):7.2f} / {np.percentile(values, 90):7.2f} / {values.max():7.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="gallery size (default 1e5)")
    parser.add_argument("--queries", type=int, default=50, help="timed queries (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed queries first (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--top-k", type=int, default=10)
    page = parser.add_argument_group("the search page under load (--concurrency)")
    page.add_argument(
        "--concurrency", type=int, default=0, metavar="N", help="requests in flight at once"
    )
    page.add_argument("--requests", type=int, default=300, help="timed requests (default 300)")
    page.add_argument("--index", default=None, metavar="DIR", help="index to serve (default: "
                      "a tiny model's index of synthetic images, built in a temporary folder)")  # fmt: skip
    page.add_argument("--max-batch", type=int, default=None, help="passed to search_app.py")
    page.add_argument(
        "--synthetic-ids", type=int, default=300, help="identities of the built gallery"
    )
    args = parser.parse_args()
    if args.concurrency:
        if args.concurrency < 1 or args.requests < 1:
            parser.error("--concurrency and --requests must be at least 1")
        return page_benchmark(args)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    cfg = base_config(
        CONFIG,
        [
            "MODEL.BACKBONE.PRETRAIN", "False",
            "MODEL.CLIP.WEIGHTS", "",
            "MODEL.TRAINING_HEADS", "False",
            "MODEL.DEVICE", "cpu",
        ],
    )  # fmt: skip
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(cfg).eval()
    build_s = time.perf_counter() - start
    context = cfg.INPUT.TEXT.CONTEXT_LENGTH
    encoder = QueryEncoder(model, context)
    dim = model.text_encoder.embed_dim

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.items, dim), dtype=np.float32)
    items = [
        GalleryItem(f"/gallery/{i:07d}.jpg", "", -1, f"{i:07d}.jpg") for i in range(args.items)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        identity = {"config": cfg.dump(), "weights": "", "weights_sha256": ""}
        SearchIndex.build(feats, items, identity).save(tmp)
        index = SearchIndex.load(tmp)
        index_s = time.perf_counter() - start

    texts = sentences(args.warmup + args.queries)
    encode_ms, search_ms, full_ms, lengths, diffs = [], [], [], [], []
    for i, text in enumerate(texts):
        ids = encoder.tokens(text)
        t0 = time.perf_counter()
        query = encoder.encode_ids(ids)
        t1 = time.perf_counter()
        index.search(query.numpy(), args.top_k)
        t2 = time.perf_counter()
        with torch.inference_mode():
            padded = F.normalize(model.encode_text(tokenize(text, context)[None]), dim=1)
        t3 = time.perf_counter()
        if i >= args.warmup:
            encode_ms.append(1e3 * (t1 - t0))
            search_ms.append(1e3 * (t2 - t1))
            full_ms.append(1e3 * (t3 - t2))
            lengths.append(ids.shape[1])
            diffs.append((query - padded).abs().max().item())
    total_ms = [e + s for e, s in zip(encode_ms, search_ms)]
    # The same queries as the search page answers requests that arrive together: one pass.
    timed = texts[args.warmup :]
    encoder.encode_many(timed[:8])
    batch_ms = []
    for _ in range(3):
        t0 = time.perf_counter()
        together = encoder.encode_many(timed)
        batch_ms.append(1e3 * (time.perf_counter() - t0))
    alone = torch.cat([encoder(t) for t in timed])
    batch_diff = (together - alone).abs().max().item()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"{args.threads} threads (torch {torch.__version__}, faiss {faiss.__version__}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(
        f"exact index: {args.items} x {dim}-d features (built, saved, loaded in {index_s:.1f} s); "
        f"ViT-B/16 CLIPRetrieval from random init (built in {build_s:.1f} s)"
    )
    print(
        f"{args.queries} queries after {args.warmup} warm-ups, {min(lengths)}-{max(lengths)} "
        f"tokens (median {statistics.median(lengths):.0f}) of a {context}-token context"
    )
    print("                              median /     p90 /     max  (ms)")
    print(f"encode (own tokens)          {summary(encode_ms)}")
    print(f"search (top-{args.top_k}, exact)       {summary(search_ms)}")
    print(f"query -> top-{args.top_k} (total)      {summary(total_ms)}")
    print(f"encode ({context} tokens, padded)   {summary(full_ms)}")
    print(
        f"padded / own-token encoding (median): {np.median(full_ms) / np.median(encode_ms):.1f}x; "
        f"max |feature difference| {max(diffs):.2e}"
    )
    print(
        f"the {len(timed)} queries encoded together (QueryEncoder.encode_many, best of 3): "
        f"{min(batch_ms):.1f} ms, {min(batch_ms) / len(timed):.2f} ms per query against "
        f"{np.median(encode_ms):.2f} alone; max |feature difference| {batch_diff:.2e}"
    )


# --------------------------------------------------------------------------------- the page
def tiny_index(folder, ids, threads):
    """An index of a tiny random-initialised CLIP + SDM over synthetic CUHK-PEDES images."""
    from plugins.search.engine import build_index

    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_synthetic.py"), "--format",
         "cuhkpedes", "--ids", str(ids), "--out", folder, "--quiet"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    opts = ["MODEL.DEVICE", "cpu", "DATALOADER.TEST_NUM_WORKERS", "0"]
    cfg = base_config(TINY_CONFIG, opts + ["MODEL.TRAINING_HEADS", "False"])  # no classifier
    torch.manual_seed(0)
    weights = os.path.join(folder, "model.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    index = os.path.join(folder, "index")
    torch.set_num_threads(threads)
    build_index(
        TINY_CONFIG, opts + ["MODEL.WEIGHTS", weights],
        os.path.join(folder, "CUHK-PEDES", "imgs"), index, echo=lambda *a: None,
    )  # fmt: skip
    return index


def start_page(index, threads, max_batch):
    """``tools/search_app.py`` on a free port, in its own process; returns (process, url)."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "search_app.py"), "--index", index]
    cmd += ["--port", "0"] + (["--max-batch", str(max_batch)] if max_batch else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env)  # fmt: skip
    for line in proc.stderr:
        match = re.search(r"on (http://\S+/) \(Ctrl-C stops\)", line)
        if match:
            # Keep reading its log (one line per request), or the pipe would fill and block it.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, match.group(1)
    raise SystemExit(f"tools/search_app.py did not start (exit status {proc.wait()})")


def ask(url, text, k):
    """(milliseconds, decoded answer) of one ``/api/search`` request."""
    query = urllib.parse.urlencode({"q": text, "k": k})
    start = time.perf_counter()
    with urllib.request.urlopen(f"{url}api/search?{query}", timeout=120) as resp:
        data = json.loads(resp.read())
    return 1e3 * (time.perf_counter() - start), data


def page_benchmark(args):
    from plugins.search.engine import TextSearcher

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = args.index or tiny_index(tmp, args.synthetic_ids, args.threads)
        build_s = time.perf_counter() - start
        texts = sentences(args.requests, seed=1)
        # The answer each query gets alone, to check every answer under load against.
        torch.set_num_threads(args.threads)
        searcher = TextSearcher(index)
        expected = {t: [r["index"] for r in searcher.search(t, args.top_k)] for t in set(texts)}
        count = len(searcher.items)
        del searcher
        proc, url = start_page(index, args.threads, args.max_batch)
        try:
            for text in sentences(args.warmup, seed=2):
                ask(url, text, args.top_k)
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                answers = list(pool.map(lambda t: ask(url, t, args.top_k), texts))
            wall_s = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    latency = np.asarray([ms for ms, _ in answers])
    right = sum(
        [r["index"] for r in data["results"]] == expected[text]
        for text, (_, data) in zip(texts, answers)
    )
    batches = np.asarray([data.get("batch", 1) for _, data in answers])
    from plugins.benchmarking import cpu_model

    print(
        f"machine: {cpu_model() or platform.machine()}, {os.cpu_count()} CPUs visible; "
        f"server: tools/search_app.py, {args.threads} threads, --max-batch "
        f"{args.max_batch or 'default'} (torch {torch.__version__}, faiss {faiss.__version__})"
    )
    built = f"built in {build_s:.1f} s: tiny CLIP + SDM, random init" if not args.index else ""
    print(f"index: {index if args.index else 'synthetic'}, {count} gallery images {built}")
    print(
        f"{args.requests} requests, {args.concurrency} at a time, top-{args.top_k}, after "
        f"{args.warmup} warm-ups; answers equal to the query searched alone: "
        f"{right}/{args.requests}"
    )
    print(
        "latency ms: p50 {:.1f} / p90 {:.1f} / p99 {:.1f} / max {:.1f}; {:.1f} queries/s".format(
            *np.percentile(latency, [50, 90, 99]), latency.max(), args.requests / wall_s
        )
    )
    print(
        f"searches answered together: median {np.median(batches):.0f}, max {batches.max()} "
        f"(requests in a batch of one: {int((batches == 1).sum())})"
    )
    return 0 if right == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
