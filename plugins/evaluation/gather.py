"""Feature collection shared by the evaluators: gather from every process, check, reorder."""

import torch
import torch.nn.functional as F
from fastreid.evaluation import DatasetEvaluator
from fastreid.utils import comm


def gather_ordered_features(indices, feats, total):
    """All processes' features, L2-normalised, in dataset order; ``None`` off the main process.

    Args:
        indices (list[Tensor]): this process's batches of dataset positions, each (B,).
        feats (list[Tensor]): the matching batches of features, each (B, D).
        total (int): the number of dataset items; every position in ``0..total - 1`` must have
            come exactly once over all processes.

    Returns:
        Tensor: (total, D) features, row ``i`` that of position ``i``; ``None`` on a process
        other than the main one (with several processes).

    Raises:
        RuntimeError: a position outside the dataset, missing or repeated.
    """
    if comm.get_world_size() > 1:
        comm.synchronize()
        indices = sum(comm.gather(indices), [])
        feats = sum(comm.gather(feats), [])
        if not comm.is_main_process():
            return None
    indices = torch.cat(indices).long() if indices else torch.zeros(0, dtype=torch.long)
    if indices.numel() and (indices.min() < 0 or indices.max() >= total):
        bad = indices[(indices < 0) | (indices >= total)][:5].tolist()
        raise RuntimeError(f"Evaluator received indices outside 0..{total - 1}: {bad}")
    counts = torch.bincount(indices, minlength=total)
    if indices.numel() != total or not bool((counts == 1).all()):
        missing = torch.nonzero(counts == 0)[:, 0]
        repeated = torch.nonzero(counts > 1)[:, 0]
        raise RuntimeError(
            f"Evaluator received {indices.numel()} items, expected {total} (each item once): "
            f"{missing.numel()} missing (first {missing[:5].tolist()}), "
            f"{repeated.numel()} repeated (first {repeated[:5].tolist()})."
        )
    feats = F.normalize(torch.cat(feats), dim=1)
    return feats[indices.argsort()]


class IndexedFeatureEvaluator(DatasetEvaluator):
    """Base of the plugin's evaluators: collects each batch's features with the dataset
    positions in ``inputs["index"]``; ``ordered_features`` gathers and checks them."""

    def reset(self):
        self._indices = []
        self._feats = []

    def process(self, inputs, outputs):
        """inputs["index"] (Tensor): (B,) dataset positions; outputs (Tensor): (B, D)."""
        self._indices.append(torch.as_tensor(inputs["index"]).reshape(-1).cpu())
        self._feats.append(outputs.detach().float().cpu())

    def ordered_features(self, total):
        """See :func:`gather_ordered_features`."""
        return gather_ordered_features(self._indices, self._feats, total)
