"""Text-to-image (and text-to-RGBT) retrieval evaluator on fast-reid's evaluator interface."""

import logging
import time
from collections import OrderedDict

import torch
from tabulate import tabulate

from .gather import IndexedFeatureEvaluator
from .metrics import rank_metrics

logger = logging.getLogger(__name__)


class RetrievalEvaluator(IndexedFeatureEvaluator):
    """Collects caption and gallery features and ranks the gallery for every caption.

    Reports text-to-image R1, R5, R10, mAP, mINP and RSum (= R1 + R5 + R10, text-to-image only),
    ``metric`` = R1 for model selection, the same figures per challenge subset, and image-to-text
    figures when ``i2t`` is set. Features are L2-normalised, so similarity is cosine.

    A subset's queries are the captions of its images. Its gallery is the whole test gallery
    (``subset_gallery="all"``), or only the subset's own images (``"subset"``): then every
    candidate, right or wrong, was taken under that condition, which isolates how well a model
    copes with it (with the whole gallery, a dark query can still be answered by the same
    person's daylight images).

    Args:
        split (RetrievalSplit): the evaluated split (for pids and subsets).
        i2t (bool): also report image-to-text retrieval.
        chunk_size (int): query rows ranked at once (bounds memory).
        dataset_name (str): used in the printed table.
    """

    def __init__(self, split, i2t=False, chunk_size=1024, dataset_name="", subset_gallery="all"):
        if subset_gallery not in ("all", "subset"):
            raise ValueError(f"subset_gallery must be 'all' or 'subset', got {subset_gallery!r}")
        self.subset_gallery = subset_gallery
        self.split = split
        self.i2t = i2t
        self.chunk_size = chunk_size
        self.dataset_name = dataset_name
        self.num_queries = len(split.captions)
        self.reset()

    def evaluate(self):
        feats = self.ordered_features(self.num_queries + len(self.split.images))
        if feats is None:  # not the main process
            return {}
        q_feats, g_feats = feats[: self.num_queries], feats[self.num_queries :]
        q_pids = torch.tensor([c.pid for c in self.split.captions])
        g_pids = torch.tensor([g.pid for g in self.split.images])

        rows = OrderedDict()
        start = time.perf_counter()
        rows["all"] = self._t2i(q_feats, g_feats, q_pids, g_pids)
        logger.info(
            f"ranking time: {1000.0 * (time.perf_counter() - start) / max(len(q_pids), 1):.3f} ms "
            f"per query against {len(g_pids)} gallery items"
        )
        query_image = torch.tensor([c.image_id for c in self.split.captions])
        for name, image_ids in sorted(self.split.subsets.items()):
            member = torch.zeros(len(self.split.images), dtype=torch.bool)
            member[torch.as_tensor(list(image_ids), dtype=torch.long)] = True
            keep = member[query_image]
            if keep.any():
                gallery = member if self.subset_gallery == "subset" else slice(None)
                rows[name] = self._t2i(
                    q_feats[keep], g_feats[gallery], q_pids[keep], g_pids[gallery]
                )
                rows[name]["queries"] = int(keep.sum())

        results = OrderedDict()
        for key in ("R1", "R5", "R10", "mAP", "mINP", "RSum"):
            results[key] = rows["all"][key]
        for name, row in rows.items():
            if name != "all":
                for key in ("R1", "R5", "R10", "mAP", "mINP", "RSum"):
                    results[f"{name}/{key}"] = row[key]
        if self.i2t:
            i2t = rank_metrics(g_feats, q_feats, g_pids, q_pids, chunk_size=self.chunk_size)
            for key in ("R1", "R5", "R10", "mAP", "mINP"):
                results[f"i2t/{key}"] = i2t[key]
        results["metric"] = results["R1"]
        self._print_table(rows)
        return results

    def _t2i(self, q_feats, g_feats, q_pids, g_pids):
        out = rank_metrics(q_feats, g_feats, q_pids, g_pids, chunk_size=self.chunk_size)
        out["RSum"] = out["R1"] + out["R5"] + out["R10"]
        out["queries"] = len(q_pids)
        return out

    def _print_table(self, rows):
        headers = ["subset", "queries", "R1", "R5", "R10", "mAP", "mINP", "RSum"]
        table = [
            [name, row["queries"]] + [f"{row[k]:.2f}" for k in headers[2:]]
            for name, row in rows.items()
        ]
        title = f"Text-to-image retrieval on {self.dataset_name}" if self.dataset_name else ""
        subsets = "subset rows: the subset's own images" if self.subset_gallery == "subset" else ""
        logger.info(
            f"{title} (gallery {len(self.split.images)}{'; ' + subsets if subsets else ''}; "
            "RSum = R1 + R5 + R10, text-to-image):\n"
            + tabulate(table, headers=headers, tablefmt="pipe")
        )


def chance_r1(split, subset_gallery="all"):
    """Expected R1 (percent) of a random ranking, overall and per subset.

    For each query, the chance that a random gallery item is one of its positives; averaged over
    the queries. ``subset_gallery`` as in :class:`RetrievalEvaluator`.
    """

    def expected(queries, gallery):
        counts = {}
        for image in gallery:
            counts[image.pid] = counts.get(image.pid, 0) + 1
        shares = [counts.get(q.pid, 0) / len(gallery) for q in queries]
        return 100 * sum(shares) / len(shares) if shares else float("nan")

    out = {"all": expected(split.captions, split.images)}
    for name, image_ids in sorted(split.subsets.items()):
        members = set(image_ids)
        queries = [q for q in split.captions if q.image_id in members]
        gallery = split.images
        if subset_gallery == "subset":
            gallery = [split.images[i] for i in sorted(members)]
        if queries:
            out[name] = expected(queries, gallery)
    return out
