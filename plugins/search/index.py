"""A faiss index of L2-normalised gallery features, with the gallery items and the model identity.

An index folder holds three files:

- ``index.faiss``: the faiss index (inner product over L2-normalised float32 features, i.e.
  cosine similarity): ``IndexFlatIP`` (exact), ``IndexIVFFlat`` or ``IndexHNSWFlat``;
- ``items.json``: one ``GalleryItem`` per index row, in row order;
- ``identity.json``: the model that encoded the gallery (config dump, weights path and sha256,
  feature dimension) and how the index was built.

The three files are one build's: ``identity.json`` and ``items.json`` carry the same
``build_id`` and ``identity.json`` the sha256 of ``index.faiss``; a folder whose files come from
different builds is refused. They are written into a hidden sibling folder that then replaces
the index folder whole (``plugins.search.folders``), so an interrupted build leaves the previous
index as it was.
"""

import json
import math
import os
import re
import uuid

import faiss
import numpy as np
import torch

from .folders import check_output_folder, sha256_file, staged_folder
from .gallery import GalleryItem, SearchError, one_line

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.json"
IDENTITY_FILE = "identity.json"
INDEX_FILES = (INDEX_FILE, ITEMS_FILE, IDENTITY_FILE)
# Written into an index folder besides its files: the search tool's ranked-list picture.
PICTURE_FILE = "last_query.png"
# What earlier versions left behind when a write was interrupted.
_OLD_TEMPORARY = re.compile(r"^\.(index\.faiss|items\.json|identity\.json)\.\d+\.tmp$")
KINDS = ("exact", "ivf", "hnsw")
# HNSW: links per node, and the candidate-list sizes while building and searching (larger is
# slower and more accurate; efSearch must be at least k).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
RECALL_K = 10
RECALL_QUERIES = 200
# Norm of the noise added to sampled gallery features to make held-out recall queries: small
# enough that the source item stays the nearest, large enough that the query is no copy of it.
RECALL_NOISE = 0.1


def is_index_entry(name):
    """Whether ``name`` is a file the search tools write into an index folder."""
    return name in INDEX_FILES or name == PICTURE_FILE or bool(_OLD_TEMPORARY.match(name))


class IndexError_(SearchError):  # noqa: N801  (IndexError is Python's)
    """An index folder is missing, incomplete or unreadable."""


def normalise(feats):
    """Features (N, D) as a C-contiguous float32 array with unit rows (a tensor or an array)."""
    if hasattr(feats, "detach"):
        feats = feats.detach().float().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {feats.shape}")
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return np.ascontiguousarray(feats / np.maximum(norms, 1e-12), dtype=np.float32)


def ivf_parameters(count):
    """(nlist, nprobe) for ``count`` items: about sqrt(N) lists, about a tenth of them probed
    (at least 8), which keeps recall@10 high on clustered features at a fraction of the cost."""
    nlist = max(1, int(round(math.sqrt(count))))
    return nlist, min(nlist, max(8, nlist // 10))


def build_faiss(feats, kind="exact"):
    """A faiss inner-product index over normalised ``feats`` (N, D); returns (index, params)."""
    if kind not in KINDS:
        raise SearchError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}.")
    count, dim = feats.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
        params = {}
    elif kind == "ivf":
        nlist, nprobe = ivf_parameters(count)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # Small galleries train on few points per list: that is fine here, so faiss' warning
        # (it asks for 39 points per centroid) is not printed.
        index.cp.min_points_per_centroid = 1
        index.train(feats)
        index.nprobe = nprobe
        params = {"nlist": nlist, "nprobe": nprobe}
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
    index.add(feats)
    return index, params


def exact_topk(feats, queries, k):
    """Indices (Q, k) of the exact top-k of ``queries`` against ``feats`` (faiss flat IP)."""
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    return index.search(queries, k)[1]


def recall_at_k(approx, exact):
    """Mean share of each query's exact top-k found in its approximate top-k.

    approx, exact (ndarray): (Q, k) indices; -1 (faiss' "no result") never counts.
    """
    shares = []
    for a, e in zip(np.asarray(approx), np.asarray(exact)):
        truth = {int(i) for i in e if i >= 0}
        if truth:
            shares.append(len(truth & {int(i) for i in a if i >= 0}) / len(truth))
    return float(np.mean(shares)) if shares else 1.0


def perturbed_queries(feats, num=RECALL_QUERIES, noise=RECALL_NOISE, seed=0):
    """Held-out queries: ``num`` random gallery features plus noise of norm ``noise``, renormalised."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(feats.shape[0], size=min(num, feats.shape[0]), replace=False)
    delta = rng.standard_normal((rows.size, feats.shape[1])).astype(np.float32)
    delta *= noise / np.linalg.norm(delta, axis=1, keepdims=True)
    return normalise(feats[rows] + delta)


class SearchIndex:
    """Gallery items, their faiss index and the identity of the model that encoded them.

    Attributes:
        index (faiss.Index): inner product over L2-normalised features, one row per item.
        items (list[GalleryItem]): the gallery, in index row order.
        identity (dict): ``config`` (yaml dump), ``config_file``, ``weights``,
            ``weights_sha256``, ``meta_architecture``, ``feature_dim``, ``pairs``, ``metric``
            ("ip"), ``kind`` ("exact" | "ivf" | "hnsw"), ``count``, plus ``params`` of the
            approximate kinds.
    """

    def __init__(self, index, items, identity):
        self.index = index
        self.items = list(items)
        self.identity = dict(identity)
        self.on_gpu = False
        self._gpu_resources = None
        self._flat = None  # torch view of an exact index's vectors, made on first search

    @classmethod
    def build(cls, feats, items, identity, kind="exact"):
        """An index of ``feats`` (N, D) (normalised here) for ``items`` (N,)."""
        feats = normalise(feats)
        if feats.shape[0] != len(items):
            raise ValueError(f"{feats.shape[0]} features for {len(items)} gallery items")
        if not len(items):
            raise SearchError("cannot build an index of an empty gallery.")
        index, params = build_faiss(feats, kind)
        identity = dict(identity)
        identity.update(
            feature_dim=int(feats.shape[1]),
            metric="ip",
            kind=kind,
            count=len(items),
            params=params,
        )
        return cls(index, items, identity)

    @property
    def kind(self):
        return self.identity.get("kind", "exact")

    def __len__(self):
        return len(self.items)

    # ------------------------------------------------------------------ files
    def save(self, index_dir):
        """Write the three files, with a new ``build_id``, into a staging folder that then
        replaces ``index_dir`` whole (created when missing)."""
        check_output_folder(index_dir, "index folder", is_index_entry)
        build_id = uuid.uuid4().hex
        with staged_folder(index_dir) as staging:
            path = os.path.join(staging, INDEX_FILE)
            faiss.write_index(
                faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index, path
            )
            _write_json(
                os.path.join(staging, ITEMS_FILE),
                {"build_id": build_id, "items": [item._asdict() for item in self.items]},
            )
            self.identity.update(build_id=build_id, index_sha256=sha256_file(path))
            _write_json(os.path.join(staging, IDENTITY_FILE), self.identity)

    @classmethod
    def load(cls, index_dir: str) -> "SearchIndex":
        """Read an index folder; ``IndexError_`` (one line) when it is missing or corrupt."""
        hint = "build one with tools/build_index.py --config-file C MODEL.WEIGHTS W --gallery G --out DIR"
        if not index_dir or not os.path.isdir(index_dir):
            raise IndexError_(f"index folder {index_dir} does not exist: {hint}.")
        missing = [f for f in INDEX_FILES if not os.path.isfile(os.path.join(index_dir, f))]
        if missing:
            raise IndexError_(
                f"index folder {index_dir} lacks {', '.join(missing)} (not an index, or its "
                f"build did not finish): {hint}."
            )
        identity = _read_json(os.path.join(index_dir, IDENTITY_FILE), dict)
        for key in ("config", "weights", "weights_sha256", "feature_dim", "count", "kind"):
            if key not in identity:
                raise IndexError_(
                    f"{os.path.join(index_dir, IDENTITY_FILE)} has no '{key}' entry: rebuild the "
                    "index with tools/build_index.py."
                )
        raw_items = _read_json(os.path.join(index_dir, ITEMS_FILE), (dict, list))
        _check_one_build(index_dir, identity, raw_items)
        if isinstance(raw_items, dict):
            raw_items = raw_items.get("items")
        try:
            items = [GalleryItem(**entry) for entry in raw_items]
        except TypeError as e:
            raise IndexError_(
                f"{os.path.join(index_dir, ITEMS_FILE)} is not a list of gallery items ({e}): "
                "rebuild the index with tools/build_index.py."
            ) from e
        path = os.path.join(index_dir, INDEX_FILE)
        try:
            index = faiss.read_index(path)
        except RuntimeError as e:
            raise IndexError_(
                f"{path} is not a faiss index ({one_line(e)[:200]}): rebuild the index with "
                "tools/build_index.py."
            ) from e
        if index.ntotal != len(items) or index.ntotal != identity["count"]:
            raise IndexError_(
                f"index folder {index_dir} is inconsistent: {index.ntotal} index rows, "
                f"{len(items)} items, count {identity['count']} in {IDENTITY_FILE}: rebuild the "
                "index with tools/build_index.py."
            )
        if index.d != identity["feature_dim"]:
            raise IndexError_(
                f"{path} holds {index.d}-d features but {IDENTITY_FILE} says "
                f"{identity['feature_dim']}: rebuild the index with tools/build_index.py."
            )
        params = identity.get("params") or {}
        if "nprobe" in params:
            faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        if "efSearch" in params:
            index.hnsw.efSearch = int(params["efSearch"])
        return cls(index, items, identity)

    # ------------------------------------------------------------------ search
    def search(self, query_feats, k):
        """The ``k`` most similar items of each query, best first.

        query_feats (Tensor | ndarray): (Q, D), L2-normalised here.
        returns: scores (Q, k') float32 (cosine similarities) and indices (Q, k') int64,
            k' = min(k, len(self)); an approximate index may pad a row with index -1.
        """
        queries = normalise(query_feats)
        if queries.shape[1] != self.index.d:
            raise SearchError(
                f"query features are {queries.shape[1]}-d but the index holds {self.index.d}-d "
                "features: query with the model the index was built with."
            )
        k = min(int(k), self.index.ntotal)
        if k < 1:
            raise SearchError(f"top-k must be at least 1, got {k}.")
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.index.hnsw.efSearch, k)
        if self.kind == "exact" and not self.on_gpu:
            return self._flat_search(queries, k)
        scores, indices = self.index.search(queries, k)
        return scores, indices.astype(np.int64)

    def _flat_search(self, queries, k, chunk=1024):
        """Exact search on the CPU as one multi-threaded matrix product over the flat index's
        own vectors (a zero-copy view). faiss's own flat search of a single query took 19.6 ms
        median at 100,000 x 512 on two cores, this 9.3 ms (tools/benchmark_search.py). Same
        scores."""
        if self._flat is None:
            count, dim = self.index.ntotal, self.index.d
            view = faiss.rev_swig_ptr(self.index.get_xb(), count * dim).reshape(count, dim)
            self._flat = torch.from_numpy(view)
        scores, indices = [], []
        with torch.inference_mode():
            for start in range(0, queries.shape[0], chunk):
                sim = torch.from_numpy(queries[start : start + chunk]) @ self._flat.t()
                top = sim.topk(k, dim=1)
                scores.append(top.values.numpy())
                indices.append(top.indices.numpy())
        return np.concatenate(scores), np.concatenate(indices).astype(np.int64)

    def recall(self, feats, queries=None, k=RECALL_K):
        """recall@k of this index against exact search over ``feats`` (N, D), the features it
        was built from; queries (Q, D) default to ``perturbed_queries(feats)``."""
        feats = normalise(feats)
        queries = perturbed_queries(feats) if queries is None else normalise(queries)
        k = min(k, feats.shape[0])
        return recall_at_k(self.search(queries, k)[1], exact_topk(feats, queries, k))

    def use_device(self, device):
        """Search on GPU when ``device`` is CUDA and faiss was built with GPU support.

        Returns whether the index moved. faiss-cpu (what the tests run) has no GPU functions,
        so every call is guarded; the GPU path itself is not exercised by the test suite.
        HNSW has no GPU implementation and stays on the CPU.
        """
        if not str(device).startswith("cuda") or self.on_gpu:
            return self.on_gpu
        num_gpus = getattr(faiss, "get_num_gpus", lambda: 0)()
        if num_gpus <= 0 or not hasattr(faiss, "StandardGpuResources"):
            return False
        gpu = int(str(device).split(":")[1]) if ":" in str(device) else 0
        try:
            resources = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(resources, gpu, self.index)
        except (RuntimeError, AttributeError):
            return False
        self._gpu_resources = resources  # must outlive the GPU index
        self.on_gpu = True
        return True


def _check_one_build(index_dir, identity, raw_items):
    """Refuse an index folder whose three files are not one build's (see the module's doc).

    Indexes written before build ids existed carry none in either JSON file and are read as
    before; a file with an id beside one without is a mixed set.
    """
    build_id = identity.get("build_id")
    items_id = raw_items.get("build_id") if isinstance(raw_items, dict) else None
    foreign = []
    if build_id is None and items_id is None:
        return
    if items_id != build_id:
        foreign.append(ITEMS_FILE)
    expected = identity.get("index_sha256")
    if build_id is not None and expected != sha256_file(os.path.join(index_dir, INDEX_FILE)):
        foreign.append(INDEX_FILE)
    if foreign:
        raise IndexError_(
            f"index folder {index_dir} mixes files of different builds ({' and '.join(foreign)} "
            f"not written with its {IDENTITY_FILE}: two builds wrote into it at once, or files "
            "were copied in from another index): rebuild the index with tools/build_index.py."
        )


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def _read_json(path, kind):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexError_(
            f"{path} cannot be read ({one_line(e)}): rebuild the index with tools/build_index.py."
        ) from e
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise IndexError_(
            f"{path} holds a {type(value).__name__}, not a {expected}: rebuild the index "
            "with tools/build_index.py."
        )
    return value
