"""RSBA meta-architecture (Dong et al., Richer Semantics, Better Alignment, IJCAI'25)."""

import math

import torch
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn

from plugins.modeling.distributed import gather_batch
from plugins.modeling.losses import id_loss
from plugins.modeling.retrieval import put_scalars
from plugins.modeling.two_stream import VICLIPModel, paired_halves

from .losses import contrastive_alignment_loss, modality_shared_loss, similarity_consistency_loss


class CrossViewFusion(nn.Module):
    """CVSC's attention fusion module (Eq. 9-10): four linear projections W_q, W_k, W_v, W_a.

    ``a = softmax_views(W_q(t) . W_k(t_a) / sqrt(d))``, ``t_m = t + W_a(sum_a a W_v(t_a))``.

    Args:
        dim (int): d, the text feature width.
    """

    def __init__(self, dim):
        super().__init__()
        self.q, self.k, self.v, self.a = (nn.Linear(dim, dim) for _ in range(4))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, text, views):
        """text (Tensor): (N, d); views (Tensor): (N, A, d) same-identity captions of other
        views -> t_m (N, d)."""
        weights = torch.einsum("nd,nad->na", self.q(text), self.k(views)) * self.scale
        weights = weights.softmax(dim=1)
        return text + self.a(torch.einsum("na,nad->nd", weights, self.v(views)))


def other_views(pids, num_views, generator=None):
    """For each item, ``num_views`` random other items of its identity (distinct, not itself).

    pids (Tensor): (N,) -> (Tensor): (N, num_views) long indices.
    """
    same = pids.reshape(-1, 1) == pids.reshape(1, -1)
    same.fill_diagonal_(False)
    available = same.sum(1)
    if bool((available < num_views).any()):
        raise ValueError(
            f"CVSC fuses MODEL.RSBA.NUM_VIEWS={num_views} other caption(s) of the same identity "
            f"and modality, but an identity has only {int(available.min()) + 1} item(s) of a "
            "modality in the batch: raise DATALOADER.NUM_INSTANCE above NUM_VIEWS"
        )
    noise = torch.rand(same.shape, generator=generator, device=pids.device)
    return noise.masked_fill(~same, -1.0).topk(num_views, dim=1).indices


@META_ARCH_REGISTRY.register()
class RSBA(VICLIPModel):
    """RSBA on the two-stream CLIP ResNet-50 (``plugins.modeling.two_stream``, AGW's split).

    Trained end to end on paired two-modality PK batches (``ModalityIdentitySampler``: visible
    item i and infrared item i share an identity) with captions (``batch["text"]``, from
    ``DATASETS.VI_CAPTIONS``):
    ``L_id + L_mse + lambda_1 L_con^o2m + lambda_2 L_sc^o2m`` (Eq. 15), each term switchable as in
    Table 4 (``MODEL.RSBA.{ESFA,CSIA,CVSC}``). The text encoder (``text``) and the fusion module
    (``fusion``) train at their own lr (``MODEL.RSBA.TEXT_LR`` / ``FUSION_LR``) and, with the
    classifier, are training-only: inference needs no caption.
    """

    training_only_prefixes = ("classifier.", "text.", "fusion.")

    def __init__(self, cfg):
        super().__init__(cfg)
        c = cfg.MODEL.RSBA
        if c.CVSC and not (c.ESFA or c.CSIA):
            raise ValueError(
                "MODEL.RSBA.CVSC compensates the captions ESFA and CSIA align with: enable "
                "MODEL.RSBA.ESFA or MODEL.RSBA.CSIA too"
            )
        if c.CVSC and c.NUM_VIEWS < 1:
            raise ValueError(f"MODEL.RSBA.NUM_VIEWS must be >= 1, got {c.NUM_VIEWS}")
        self.esfa, self.csia, self.cvsc = c.ESFA, c.CSIA, c.CVSC
        self.uses_text = c.ESFA or c.CSIA
        self.num_views = c.NUM_VIEWS
        self.lambda1, self.lambda2 = c.LAMBDA1, c.LAMBDA2
        self.mse_weight = c.MSE_WEIGHT
        self.tau = c.TAU
        base_lr = cfg.SOLVER.BASE_LR
        self._lr_factors = {}
        if self.training_heads and self.uses_text:
            self._lr_factors["text."] = c.TEXT_LR / base_lr
        elif self.training_heads:
            self.text = None  # the baseline (Table 4 row 0) reads no caption
        if self.training_heads and self.cvsc:
            self.fusion = CrossViewFusion(self.embed_dim)
            self._lr_factors["fusion."] = c.FUSION_LR / base_lr

    def lr_factors(self):
        """Parameter prefix -> factor of ``SOLVER.BASE_LR`` (Sec. 4.2's two learning rates)."""
        return dict(self._lr_factors)

    def losses(self, batch):
        pids = batch["targets"].to(self.device)
        modalities = torch.as_tensor(batch["modalities"], device=self.device)
        feats, pids, modalities = gather_batch(self.image_features(batch), pids, modalities)
        vis_idx, ir_idx = paired_halves(modalities, pids)
        logits = self.identity_logits(feats)
        p = pids[vis_idx]
        f_vis, f_ir = feats[vis_idx], feats[ir_idx]
        out = {
            # Eq. 1: the two modalities' mean cross-entropies, summed.
            "loss_id": id_loss(logits[vis_idx], p) + id_loss(logits[ir_idx], p),
            "loss_mse": self.mse_weight * modality_shared_loss(f_vis, f_ir, p),
        }
        put_scalars(id_acc=(logits.argmax(1) == pids).float().mean())
        if not self.uses_text:
            return out
        if "text" not in batch:
            raise KeyError(
                "RSBA aligns images with captions: set DATASETS.VI_CAPTIONS to the caption file "
                "(image path -> caption; check it with tools/check_captions.py)"
            )
        text = gather_batch(self.text(batch["text"].to(self.device))[0])
        t_vis, t_ir = text[vis_idx], text[ir_idx]
        m_vis, m_ir = t_vis, t_ir
        if self.cvsc:
            m_vis = self.fusion(t_vis, t_vis[other_views(p, self.num_views)])
            m_ir = self.fusion(t_ir, t_ir[other_views(p, self.num_views)])
        if self.esfa:
            con = contrastive_alignment_loss(f_vis, m_vis, f_ir, m_ir, self.tau)
            out["loss_con"] = self.lambda1 * con
        if self.csia:
            sc = similarity_consistency_loss(f_vis, t_vis, f_ir, t_ir, m_vis, m_ir)
            out["loss_sc"] = self.lambda2 * sc
        return out
