"""Text search over a gallery: encode it into an index with a trained model, query it with a sentence.

``build_index`` loads a checkpoint as ``--eval-only`` does (no training-only parts, so an
identity classifier of any size is skipped), encodes the gallery with the model's
``encode_image`` and writes a ``SearchIndex`` that records the model's identity: the config dump
and the sha256 of the weights file. ``TextSearcher`` rebuilds that model from the recorded
config and weights, refuses weights whose hash differs, and encodes each query on its own
tokens: CLIP's text transformer is causal, so the features at and before the end-of-text token
do not depend on the padding after it, and encoding the real tokens instead of the full
context gives the same feature in less time (tools/benchmark_search.py measures how much).
"""

import datetime
import json
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from plugins.config import inference_only

from .folders import FolderLock, check_output_folder, remove_stale_staging, sha256_file
from .gallery import DATASET_PREFIX, GalleryError, SearchError, list_gallery, one_line
from .index import (
    KINDS,
    RECALL_K,
    RECALL_NOISE,
    IndexError_,
    SearchIndex,
    is_index_entry,
    normalise,
)

__all__ = [
    "GalleryError",
    "IndexError_",
    "QueryEncoder",
    "SearchError",
    "TextSearcher",
    "build_index",
    "check_query",
    "sha256_file",
]

REBUILD = "rebuild the index with tools/build_index.py"
DEVICES = ("cpu", "cuda")
# Queries encoded in one forward pass (search_batch, recall queries): padding to the longest
# sentence of a batch costs little at this size.
QUERY_BATCH = 64


# --------------------------------------------------------------------------------- the model
def base_config(config_file="", opts=(), extra_imports=()):
    """``plugins.engine.build_config`` with its errors as one-line ``SearchError``s."""
    from plugins.engine import build_config

    if config_file and not os.path.isfile(config_file):
        raise SearchError(f"--config-file {config_file}: no such file.")
    try:
        return build_config(config_file, list(opts), extra_imports)
    except (KeyError, ValueError, AssertionError, RuntimeError) as e:
        raise SearchError(f"cannot build the config {config_file}: {one_line(e)}") from e


def evaluation_config(cfg, weights, device=None):
    """A frozen copy of ``cfg`` set up as ``--eval-only`` sets it: every weight comes from
    ``weights`` (CLIP weights are not read) and training-only parts are not built."""
    from plugins.engine import resolve_device

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    try:
        inference_only(cfg, weights)  # CLIP's activation as the checkpoint records it
    except ValueError as e:
        raise SearchError(one_line(e)) from e
    if device:
        cfg.MODEL.DEVICE = device
    try:
        cfg.MODEL.DEVICE = resolve_device(cfg)
    except RuntimeError as e:
        raise SearchError(one_line(e)) from e
    check_device(cfg.MODEL.DEVICE, f"--device {device}" if device else None)
    cfg.freeze()
    return cfg


def check_device(device, given_as=None):
    """Refuse a torch device the search tools do not run on (anything but CPU and CUDA)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        kind = None
    if kind not in DEVICES:
        raise SearchError(
            f"{given_as or f'MODEL.DEVICE {device}'}: not a device the search runs on; "
            "pass cpu, cuda, cuda:N or auto."
        )


def config_from_identity(identity, weights, device=None):
    """The evaluation config an index recorded (its yaml dump, not the original file)."""
    from fastreid.config import CfgNode

    cfg = base_config(extra_imports=identity.get("extra_imports", ()))
    try:
        cfg.merge_from_other_cfg(CfgNode.load_cfg(identity["config"]))
    except Exception as e:  # yaml or yacs errors of a damaged or foreign identity.json
        raise IndexError_(
            f"the config recorded in identity.json cannot be read ({one_line(e)[:200]}): {REBUILD}."
        ) from e
    return evaluation_config(cfg, weights, device)


def uses_thermal(model):
    """Whether ``model`` encodes RGB + thermal pairs (its fusion reads the thermal image)."""
    fusion = getattr(model, "fusion", None)
    return bool(getattr(fusion, "needs_thermal", False))


def describe_model(cfg, model):
    """``MGANet (fusion atf)``: the meta-architecture and what its fusion reads."""
    fusion = getattr(model, "fusion", None)
    if fusion is None:
        return cfg.MODEL.META_ARCHITECTURE
    mode = getattr(fusion, "mode", None)
    if mode is None and cfg.MODEL.META_ARCHITECTURE == "MGANet":
        mode = cfg.MODEL.MGANET.FUSION
    return f"{cfg.MODEL.META_ARCHITECTURE} (fusion {mode or type(fusion).__name__})"


def load_model(cfg):
    """The model of an evaluation config with ``MODEL.WEIGHTS`` loaded strictly, in eval mode."""
    from fastreid.modeling.meta_arch import build_model

    from plugins.engine.checkpoint import Checkpointer, CheckpointError

    weights = cfg.MODEL.WEIGHTS
    if not weights or not os.path.isfile(weights):
        raise SearchError(
            f"MODEL.WEIGHTS {weights!r} is not a file: pass the trained checkpoint "
            "(MODEL.WEIGHTS path/to/model_final.pth)."
        )
    try:
        model = build_model(cfg)
    except (KeyError, ValueError) as e:
        raise SearchError(
            f"cannot build MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}: {one_line(e)}"
        ) from e
    if not callable(getattr(model, "encode_text", None)) or not callable(
        getattr(model, "encode_image", None)
    ):
        raise SearchError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no text encoder "
            "(encode_text): text search needs a text-to-image or text-RGBT model."
        )
    try:
        Checkpointer(model).load(weights, strict=True, evaluation=True)
    except CheckpointError as e:
        raise SearchError(one_line(e)) from e
    return model.eval()


# --------------------------------------------------------------------------------- queries
def check_query(text):
    """The query stripped; an empty or whitespace-only one is a ``SearchError``."""
    if not isinstance(text, str) or not text.strip():
        raise SearchError(
            "the query is empty: give a sentence describing the person, e.g. "
            '"a woman in a red coat carrying a black bag".'
        )
    return text.strip()


class QueryEncoder:
    """Encode one query sentence as evaluation does, on its own tokens only.

    The caption is tokenised as the test loader tokenises it (``INPUT.TEXT.CONTEXT_LENGTH``,
    truncated with the end-of-text token kept), then cut after the end-of-text token. A model
    whose ``encode_text`` is the retrieval base's (the global feature of a plain CLIP text
    encoder) runs its ``text_encoder`` directly (``direct``); models whose ``encode_text`` does
    more (CoRL concatenates two normalised copies) get the trimmed ids through their own
    ``encode_text``, whose encoders read the end-of-text position, so the feature is the same.

    Args:
        model: an evaluation-mode retrieval model.
        context_length (int): the test loader's token length.
    """

    def __init__(self, model, context_length):
        from plugins.modeling.clip import CLIPTextEncoder
        from plugins.modeling.retrieval import RetrievalModel

        self.model = model
        self.context_length = int(context_length)
        self.direct = (
            isinstance(getattr(model, "text_encoder", None), CLIPTextEncoder)
            and type(model).encode_text is RetrievalModel.encode_text
        )

    def tokens(self, text):
        """Token ids (1, L) of ``text`` up to and including end-of-text, L <= context length."""
        from plugins.data.captions import tokenize
        from plugins.modeling.clip import trim_token_ids

        return trim_token_ids(tokenize(check_query(text), self.context_length)[None])

    @torch.inference_mode()
    def encode_ids(self, ids):
        """L2-normalised features (B, D) of token ids (B, L) (trimmed or zero-padded)."""
        from plugins.modeling.clip import eot_positions

        ids = ids.to(self.model.device)
        if self.direct:
            encoder = self.model.text_encoder
            feats = encoder.forward_embeddings(encoder.token_embedding(ids), eot_positions(ids))[0]
        else:
            feats = self.model.encode_text(ids)
        return F.normalize(feats.float(), dim=1)

    def __call__(self, text):
        """(1, D) L2-normalised feature of one sentence; empty text is a ``SearchError``."""
        return self.encode_ids(self.tokens(text))

    def encode_many(self, texts, batch_size=QUERY_BATCH):
        """(N, D) L2-normalised features of N sentences, ``batch_size`` per forward pass.

        Each batch is cut after its longest sentence's end-of-text token; the shorter ones are
        zero-padded after theirs, which the causal text encoder does not see (equal to
        encoding each alone within float rounding)."""
        from plugins.data.captions import tokenize_batch
        from plugins.modeling.clip import trim_token_ids

        texts = [check_query(t) for t in texts]
        feats = []
        for start in range(0, len(texts), batch_size):
            ids = tokenize_batch(texts[start : start + batch_size], self.context_length)
            feats.append(self.encode_ids(trim_token_ids(ids)))
        return torch.cat(feats)


# --------------------------------------------------------------------------------- the gallery
class _GalleryImages(torch.utils.data.Dataset):
    """The test-time transform of each gallery item: ``images`` and, for pairs, ``t_images``."""

    def __init__(self, items, transform, thermal):
        from plugins.data.items import GalleryImage

        self.images = [
            GalleryImage(item.path, item.pid, 0, i, item.t_path if thermal else "", item.name)
            for i, item in enumerate(items)
        ]
        self.transform = transform
        self.thermal = thermal

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from plugins.data.build import load_images
        from plugins.data.transforms import ImageReadError

        try:
            return load_images(self.images[index], self.transform, self.thermal)
        except ImageReadError as e:
            # The reader's first line names the file; its advice is for caption datasets.
            line = str(e).splitlines()[0] if str(e) else repr(e)
            raise GalleryImageError(
                line.replace("cannot read image", "cannot read gallery image", 1)
            ) from e


class GalleryImageError(GalleryError):
    """A gallery image cannot be decoded; ``str(e)`` is ``cannot read gallery image PATH: ...``.

    Raised in a loader worker, it reaches the main process as this class with the worker's
    traceback appended to the message: ``encode_gallery`` keeps the line naming the file.
    """


class Progress:
    """One stderr line each time another tenth of the work is done (and at the end)."""

    def __init__(self, total, what, stream=None):
        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        self.done, self.shown, self.start = 0, 0, time.perf_counter()

    def update(self, count):
        self.done += count
        tenth = self.done * 10 // max(self.total, 1)
        if tenth > self.shown or self.done >= self.total:
            self.shown = tenth
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            print(
                f"encoding {self.what}: {self.done}/{self.total} "
                f"({100 * self.done // max(self.total, 1)}%, {rate:.1f}/s)",
                file=self.stream,
                flush=True,
            )


@torch.inference_mode()
def encode_gallery(model, cfg, items, thermal, batch_size=None, num_workers=None):
    """L2-normalised image (or fused pair) features (N, D) float32 of gallery ``items``.

    Images go through the test transform (``INPUT.SIZE_TEST``) in batches of ``batch_size``
    (default ``TEST.IMS_PER_BATCH``) read by ``num_workers`` processes (default
    ``DATALOADER.TEST_NUM_WORKERS``), on ``MODEL.DEVICE``.
    """
    from plugins.data.transforms import ImageReadError, PairTransform

    dataset = _GalleryImages(items, PairTransform.from_config(cfg, is_train=False), thermal)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=int(batch_size or cfg.TEST.IMS_PER_BATCH),
        shuffle=False,
        num_workers=cfg.DATALOADER.TEST_NUM_WORKERS if num_workers is None else num_workers,
        pin_memory=str(cfg.MODEL.DEVICE).startswith("cuda"),
    )
    progress = Progress(len(items), "pairs" if thermal else "images")
    feats = []
    try:
        for batch in loader:
            feats.append(F.normalize(model.encode_image(batch).float(), dim=1).cpu().numpy())
            progress.update(len(batch["images"]))
    except (GalleryImageError, ImageReadError) as e:
        # A worker's error comes back with its traceback appended: keep the line naming the file.
        match = re.search(r"cannot read (?:gallery )?image .*", str(e))
        line = match.group(0) if match else one_line(e)
        line = line.replace("cannot read image", "cannot read gallery image", 1).rstrip(". ")
        raise GalleryError(
            f"{line}: replace that file with a readable image, or move it out of the gallery, "
            "and build the index again."
        ) from e
    return np.ascontiguousarray(np.concatenate(feats), dtype=np.float32)


def read_queries(path):
    """Non-empty lines of a UTF-8 text file of query sentences."""
    try:
        with open(path, "rb") as f:
            # Decoded whole, so that the offset of a bad byte is the file's, not a chunk's.
            lines = [line.strip() for line in f.read().decode("utf-8").splitlines()]
        lines = [line for line in lines if line]
    except UnicodeDecodeError as e:
        raise SearchError(
            f"--recall-queries {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
            f"offset {e.start}): save it as UTF-8, one sentence per line."
        ) from e
    except OSError as e:
        raise SearchError(
            f"--recall-queries {path}: {e.strerror or one_line(e)}: pass a text file of "
            "sentences, one per line."
        ) from e
    if not lines:
        raise SearchError(f"--recall-queries {path} holds no sentences (one per line).")
    return lines


def check_loader_sizes(batch_size, num_workers):
    """Refuse a batch size below 1 and a negative worker count, with the flag to fix."""
    if batch_size is not None and int(batch_size) < 1:
        raise SearchError(f"--batch-size {batch_size}: pass 1 or more images per batch.")
    if num_workers is not None and int(num_workers) < 0:
        raise SearchError(
            f"--num-workers {num_workers}: pass 0 (read images in this process) or a number "
            "of image-reading processes."
        )


class OnnxImageEncoder:
    """``encode_image(batch)`` of an ONNX export (``tools/export_onnx.py``), for
    ``encode_gallery``: the exported image encoder run by onnxruntime."""

    def __init__(self, onnx_dir, weights_sha256):
        from .onnx_encoders import MANIFEST_FILE, OnnxEncoders

        try:
            # onnx.json must be there and name every file's sha256: the files are checked
            # against it before onnxruntime reads them.
            self.encoders = OnnxEncoders(onnx_dir, require_manifest=True)
        except (OSError, ValueError) as e:
            raise SearchError(f"--onnx {onnx_dir}: {one_line(e)}") from e
        manifest = self.encoders.manifest
        if manifest.get("passed") is not True:
            raise SearchError(
                f"--onnx {onnx_dir} failed its own comparison with torch when it was exported "
                f"({MANIFEST_FILE} says passed: {json_value(manifest.get('passed'))}): export "
                "again with tools/export_onnx.py until it passes, or leave out --onnx."
            )
        exported = manifest.get("weights_sha256")
        if exported != weights_sha256:
            raise SearchError(
                f"--onnx {onnx_dir} was exported from other weights than MODEL.WEIGHTS: export "
                "them again with tools/export_onnx.py."
            )

    def encode_image(self, batch):
        given = {name: batch.get(name) for name in self.encoders.image_inputs}
        return torch.from_numpy(self.encoders.encode_images(**given))


def json_value(value):
    """``value`` as JSON writes it (``false``, ``null``), for messages about JSON files."""
    return json.dumps(value)


def inside(path, folder):
    """Whether ``path`` is ``folder`` or below it (both real paths)."""
    return os.path.commonpath([path, folder]) == folder


def build_index(
    config_file,
    opts=(),
    gallery="",
    out="",
    approx=None,
    batch_size=None,
    num_workers=None,
    recall_queries=None,
    extra_imports=(),
    echo=print,
    onnx=None,
):
    """Encode ``gallery`` with the model of ``config_file`` + ``opts`` (``MODEL.WEIGHTS`` among
    them) and write the index to ``out``.

    Args:
        approx (str | None): None (exact ``IndexFlatIP``), ``"ivf"`` or ``"hnsw"``; an
            approximate index reports its recall@10 against exact search.
        recall_queries (str | None): a text file of sentences (one per line) to measure that
            recall on; default: randomly chosen gallery features, slightly perturbed.
        echo (callable): receives the summary lines (progress goes to stderr).
        onnx (str | None): a folder of ``tools/export_onnx.py`` made from the same weights: the
            gallery is encoded by onnxruntime (queries still by the torch model).
    Returns:
        SearchIndex: the index written.
    """
    kind = approx or "exact"
    if kind not in KINDS:
        raise SearchError(f"--approx {approx!r}: expected ivf or hnsw (or nothing for exact).")
    # Everything that can be refused without the model is refused before it is loaded.
    out_real = check_output_folder(out, "--out", is_index_entry)
    check_loader_sizes(batch_size, num_workers)
    sentences = read_queries(recall_queries) if recall_queries else None
    if sentences and kind == "exact":
        echo(
            f"--recall-queries {recall_queries} is not used: an exact index needs no recall check."
        )
    raw = base_config(config_file, opts, extra_imports)
    if not raw.MODEL.WEIGHTS:
        raise SearchError(
            "MODEL.WEIGHTS is empty: add MODEL.WEIGHTS path/to/model_final.pth (the trained "
            "checkpoint) to the command."
        )
    weights = os.path.abspath(raw.MODEL.WEIGHTS)
    cfg = evaluation_config(raw, weights)
    items = list_gallery(gallery, cfg, exclude=(out_real,))
    if not gallery.startswith(DATASET_PREFIX) and inside(out_real, os.path.realpath(gallery)):
        echo(f"the index folder {out} is inside the gallery {gallery}: it is not indexed.")
    if not os.path.isfile(weights):
        raise SearchError(f"MODEL.WEIGHTS {weights}: no such file.")
    weights_sha256 = sha256_file(weights)
    model = load_model(cfg)
    thermal = uses_thermal(model)
    pairs = any(item.t_path for item in items)
    what = describe_model(cfg, model)
    if thermal and not pairs:
        raise SearchError(
            f"{what} encodes RGB + thermal pairs but the gallery {gallery} has RGB images only: "
            "pass a folder holding RGB/ and T/ with the same file names (or dataset:RGBTPEDES)."
        )
    if pairs and not thermal:
        if not gallery.startswith(DATASET_PREFIX):
            raise SearchError(
                f"{what} encodes RGB images only but the gallery {gallery} holds RGB + thermal "
                "pairs: pass its RGB/ folder, or the config of an RGBT model (MGANet, or "
                "CLIPRetrieval with MODEL.RETRIEVAL.FUSION add / cat / t)."
            )
        # A unimodal baseline on an RGBT dataset: its own evaluation reads the RGB images only.
        items = [item._replace(t_path="") for item in items]
        echo(f"{what} reads RGB images only: the thermal images of {gallery} are not used.")
    image_encoder = OnnxImageEncoder(onnx, weights_sha256) if onnx else model
    identity = {
        "config": cfg.dump(),
        "config_file": os.path.abspath(config_file) if config_file else "",
        "weights": weights,
        "weights_sha256": weights_sha256,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "pairs": bool(thermal),
        "gallery": gallery if gallery.startswith(DATASET_PREFIX) else os.path.abspath(gallery),
        "extra_imports": list(extra_imports),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    created = not os.path.exists(out_real)
    try:
        # One build at a time per folder; the files are written into a staging folder that
        # replaces the index folder whole at the end (SearchIndex.save).
        with FolderLock(out_real, "--out"):
            remove_stale_staging(out_real)
            echo(f"encoding {len(items)} gallery {'pairs' if thermal else 'images'} with {what}")
            if onnx:
                echo(f"gallery encoded by onnxruntime from {onnx}")
            feats = encode_gallery(image_encoder, cfg, items, thermal, batch_size, num_workers)
            encoder = QueryEncoder(model, cfg.INPUT.TEXT.CONTEXT_LENGTH)
            query_dim = encoder("a person").shape[1]
            if query_dim != feats.shape[1]:
                raise SearchError(
                    f"{what} gives {query_dim}-d text features but {feats.shape[1]}-d image "
                    "features: its encode_text and encode_image cannot be compared."
                )
            index = SearchIndex.build(feats, items, identity, kind)
            if kind != "exact":
                queries = encoder.encode_many(sentences).cpu().numpy() if sentences else None
                measure_recall(index, feats, queries, recall_queries, echo)
            index.save(out_real)
    except BaseException:
        # A folder this build created and did not fill is not left behind.
        if created and os.path.isdir(out_real) and set(os.listdir(out_real)) <= {".lock"}:
            shutil.rmtree(out_real, ignore_errors=True)
        raise
    echo(f"wrote an {kind} index of {len(items)} items ({feats.shape[1]}-d) to {out}")
    return index


def measure_recall(index, feats, queries, recall_queries, echo):
    """Record and print an approximate index's recall@10 against exact search over ``feats``
    (N, D), on ``queries`` (Q, D) encoded from ``recall_queries`` or, when None, perturbed
    gallery features."""
    if queries is not None:
        source = f"{len(queries)} queries from {recall_queries}"
    else:
        source = (
            f"{min(len(feats), 200)} held-out queries: random gallery features perturbed by "
            f"noise of norm {RECALL_NOISE}"
        )
    recall = index.recall(feats, queries)
    index.identity["recall"] = {"k": RECALL_K, "value": recall, "queries": source}
    params = ", ".join(f"{k} {v}" for k, v in index.identity["params"].items())
    echo(
        f"recall@{min(RECALL_K, len(feats))} of the {index.kind} index ({params}) against exact "
        f"search: {recall:.4f} over {source}"
    )


# --------------------------------------------------------------------------------- searching
class TextSearcher:
    """A loaded index and the model it records, answering text queries.

    Attributes:
        index (SearchIndex): the gallery index.
        items (list[GalleryItem]): the gallery, in index row order.
        model: the evaluation-mode model; ``encoder`` (QueryEncoder) encodes queries with it.
        has_identities (bool): gallery items carry pids (then a query may give a pid to colour
            matches).
    """

    def __init__(self, index_dir: str, weights: str | None = None, device: str = "cpu"):
        """Loads the index and the model it records (weights hash checked; other weights refused)."""
        self.index_dir = index_dir
        self.index = SearchIndex.load(index_dir)
        self.items = self.index.items
        identity = self.index.identity
        recorded, expected = identity["weights"], identity["weights_sha256"]
        if weights:
            path = os.path.abspath(weights)
            if not os.path.isfile(path):
                raise SearchError(f"--weights {weights}: no such file.")
        else:
            path = recorded
            if not os.path.isfile(path):
                raise SearchError(
                    f"the weights {recorded} that the index {index_dir} was built with are "
                    f"missing: pass --weights with a copy of that file (sha256 {expected[:16]}...), "
                    f"or {REBUILD}."
                )
        if sha256_file(path) != expected:
            if path == recorded:
                raise SearchError(f"{recorded} was modified after the index was built: {REBUILD}.")
            raise SearchError(
                f"--weights {weights} are not the weights the index {index_dir} was built with "
                f"({recorded}, sha256 {expected[:16]}...): search without --weights, or "
                f"{REBUILD} for these weights."
            )
        self.weights = path
        self.cfg = config_from_identity(identity, path, device)
        self.model = load_model(self.cfg)
        self.encoder = QueryEncoder(self.model, self.cfg.INPUT.TEXT.CONTEXT_LENGTH)
        self.index.use_device(self.cfg.MODEL.DEVICE)
        self.has_identities = any(item.pid >= 0 for item in self.items)

    def encode_query(self, text: str) -> torch.Tensor:
        """(1, D) L2-normalised feature of ``text``; empty text is a ``SearchError``."""
        return self.encoder(text).cpu()

    def search(self, text: str, top_k: int = 10) -> list[dict]:
        """The ``top_k`` gallery items most similar to ``text``, best first.

        Returns:
            list[dict]: ``rank`` (from 1), ``score`` (cosine similarity), ``name``, ``path``,
            ``t_path``, ``pid`` (-1 without identities), ``index`` (the item's row).
        """
        check_top_k(top_k)
        scores, indices = self.index.search(normalise(self.encode_query(text)), int(top_k))
        return self._ranked(scores[0], indices[0])

    def search_batch(self, texts, top_k=10) -> list[list[dict]]:
        """``search`` of several sentences at once: one text-encoder pass per ``QUERY_BATCH``
        sentences and one index search per distinct k. The results equal ``search``'s one by
        one (the features within float rounding).

        Args:
            texts (Sequence[str]): the sentences.
            top_k (int | Sequence[int]): one k for all, or one per sentence.
        Returns:
            list[list[dict]]: each sentence's ``search`` result, in order.
        """
        texts = list(texts)
        ks = list(top_k) if isinstance(top_k, list | tuple) else [top_k] * len(texts)
        if len(ks) != len(texts):
            raise ValueError(f"{len(texts)} queries but {len(ks)} top-k values")
        for k in ks:
            check_top_k(k)
        if not texts:
            return []
        feats = normalise(self.encoder.encode_many(texts).cpu())
        results = [None] * len(texts)
        for k in sorted(set(ks)):
            rows = [i for i, kk in enumerate(ks) if kk == k]
            scores, indices = self.index.search(feats[rows], int(k))
            for j, i in enumerate(rows):
                results[i] = self._ranked(scores[j], indices[j])
        return results

    def _ranked(self, scores, indices):
        """Result dicts of one query's (k,) scores and rows."""
        results = []
        for score, row in zip(scores, indices):
            if row < 0:  # an approximate index found fewer than top_k items
                continue
            item = self.items[row]
            results.append(
                {
                    "rank": len(results) + 1,
                    "score": float(score),
                    "name": item.name,
                    "path": item.path,
                    "t_path": item.t_path,
                    "pid": int(item.pid),
                    "index": int(row),
                }
            )
        return results


def check_top_k(top_k):
    """Refuse a top-k that is not a positive integer."""
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise SearchError(f"top-k must be a positive integer, got {top_k!r}.")
