#!/usr/bin/env python
"""Benchmark a text query against a large exact index: encode the sentence, then search.

    OMP_NUM_THREADS=2 python tools/benchmark_search.py [--items 100000] [--queries 50] [--threads 2]

Builds an exact index (``IndexFlatIP``) of ``--items`` random L2-normalised 512-d features in a
temporary folder (written and read back as tools/build_index.py writes it), builds the full-size
CLIP ViT-B/16 text encoder from random initialisation (``CLIPRetrieval`` of
configs/CUHKPEDES/clip_sdm.yml, no weights: timings do not depend on the weights' values) and
times query text -> top-10 over ``--queries`` sentences after ``--warmup`` warm-ups: the
encoding of the query's own tokens (``QueryEncoder``, what tools/search.py runs) and the index
search (``SearchIndex.search``), separately and together. The encoding of the same sentences padded to 77 tokens is
timed too, for comparison, and the largest difference between the two features is printed.
Run it alone on the machine: other processes change the figures.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
